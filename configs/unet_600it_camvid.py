# U-Net (Ronneberger et al. 2015) next to DeepLab v3+ on the 600-iteration CamVid budget
# (deeplabv3plus_r18-d16_600it_camvid.py: 180x240 crops of the image rescaled by 0.5-1.5,
# batch 4, AdamW 2e-3 with a 10-iteration warm-up and poly decay, one validation at the end,
# seed 0); only the model changes. 5 stages, 2x2 up-convs, padded 3x3 convs with BN (so the
# 480x360 validation images need no padding), trained from scratch.
# Width: the paper's base 64 measured 5.5 s/iteration (tools/train.py, 2 CPU cores shared with
# another training run), 8-9x DeepLab v3+ R18's 0.62-0.71 s/it in the same conditions, so the
# base is 32 (1.46-1.49 s/it, about 2.2x; 7.8M parameters; base 16: 0.51 s/it).
# Measured (seed 0, 2 CPU cores, 15 min): val mIoU 19.29 / mAcc 32.43 / aAcc 59.78 (DeepLab v3+
# at the same budget: 28.43; Pavement and Tree still at 0).
_base_ = ['deeplabv3plus_r18-d16_600it_camvid.py']
base_channels = 32
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(_delete_=True, type='UNetEncoder', in_channels=3,
                  base_channels=base_channels, num_stages=5, norm_cfg=norm_cfg),
    decode_head=dict(_delete_=True, type='UNetHead',
                     in_channels=tuple(base_channels * 2 ** i for i in range(5)),
                     channels=base_channels, upsample='deconv', dropout_ratio=0.1,
                     num_classes=11, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)))
