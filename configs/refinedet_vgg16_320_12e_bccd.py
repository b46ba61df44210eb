# RefineDet320 VGG-16 at full width (the paper's widths: 64-512 VGG stages, 1024-wide fc6 / fc7,
# 256-wide transfer connection blocks) on BCCD, trained from scratch with BatchNorm in the
# backbone, for the shared 12-epoch budget of `retinanet_r18_fpn_320_12e_bccd.py` (same data,
# image size, seed and optimiser as that RetinaNet: AdamW 1e-3, 100-iteration warm-up, cosine
# to 1e-5), so the two detectors compare at the same budget. 75.0 GFLOPs per 320x320 image,
# 6.1x the RetinaNet R18-FPN's 12.2 (tools/analysis/get_flops.py); 33.97M parameters.
# Measured (seed 0, 2 CPU cores, 52 min, 9.3 s/iteration): val VOC mAP@0.5 0.8834 after 12 epochs
# (RBC 0.851, WBC 0.989, Platelets 0.810), 0.8002 / 0.8885 at epochs 4 / 8 (the best checkpoint
# is kept); the RetinaNet at this budget: 0.883 in 9 min.
_base_ = ['refinedet_vgg16_320_bccd.py']
model = dict(
    backbone=dict(stage_channels=(64, 128, 256, 512, 512), fc_channels=1024,
                  extra_channels=(256, 512)),
    neck=dict(in_channels=(512, 512, 1024, 512), out_channels=256),
    bbox_head=dict(in_channels=(512, 512, 1024, 512), feat_channels=256))
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=4)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-5, by_epoch=True, begin=0,
         end=max_epochs),
]
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=1, save_best='pascal_voc/mAP',
                                     rule='greater'))
