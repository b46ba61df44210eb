# FCN-8s (Long et al. 2015) next to DeepLab v3+ on the 600-iteration CamVid budget
# (deeplabv3plus_r18-d16_600it_camvid.py: 180x240 crops of the image rescaled by 0.5-1.5,
# batch 4, AdamW 2e-3 with a 10-iteration warm-up and poly decay, one validation at the end,
# seed 0); only the model changes. ResNet-18 without dilation (strides 8 / 16 / 32 at C3 / C4 /
# C5, 128 / 256 / 512 channels), trained from scratch. The paper's fc6 / fc7 become a 3x3 and a
# 1x1 conv of 256 channels with BN on C5; score layers, 2x bilinear-initialised transposed convs
# and zero-initialised skip scores at C4 and C3, then a bilinear x8 to the labels. 12.4M
# parameters; 0.40 s/iteration measured with tools/train.py next to DeepLab v3+ R18's
# 0.62-0.71 (2 CPU cores shared with another training run).
# Measured (seed 0, 2 CPU cores, 4.5 min): val mIoU 27.57 / mAcc 39.33 / aAcc 70.85 (DeepLab v3+
# at the same budget: 28.43).
_base_ = ['deeplabv3plus_r18-d16_600it_camvid.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(out_indices=(1, 2, 3), strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1)),
    decode_head=dict(_delete_=True, type='FCNSkipHead', variant='8s', in_channels=(128, 256, 512),
                     in_index=(0, 1, 2), num_convs=2, kernel_size=(3, 1), channels=256,
                     dropout_ratio=0.1, num_classes=11, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)))
