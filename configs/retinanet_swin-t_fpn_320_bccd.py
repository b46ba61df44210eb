# RetinaNet Swin-T-FPN at 320 px on BCCD (3 blood-cell classes), trained from scratch (no
# pretrained weights are available offline). Same data, schedule and head as
# retinanet_r18_fpn_320_bccd.py (inherited), so the two compare backbones: Swin-T itself at full
# width (27.5M backbone parameters; timm / official / mmdet ImageNet weights load through
# `pretrained=`). FPN takes the stride 8/16/32 stages (192, 384, 768 ch); at 320 px they are 40,
# 20 and 10 tokens wide, larger than the 7-token window, so every odd block shifts. Optimiser: the
# Swin detection recipe's AdamW with weight decay 0.05 and no decay on norms and the relative
# position bias tables, at lr 2e-4 (the recipe's 1e-4 at batch 16 is for fine-tuning a pretrained
# backbone; from scratch with batch 8 a higher rate with the same warm-up). Stochastic depth 0.1:
# the low end of the detection recipes (0.2 for Swin-T), as ~200 training images and 48 epochs
# leave little room for slower convergence.
_base_ = ['./retinanet_r18_fpn_320_bccd.py']
model = dict(
    backbone=dict(_delete_=True, type='SwinTransformer', arch='T', drop_path_rate=0.1,
                  out_indices=(1, 2, 3), frozen_stages=-1),
    neck=dict(in_channels=[192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys=dict(relative_position_bias_table=dict(decay_mult=0.),
                                        norm=dict(decay_mult=0.))))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=48, eta_min=1e-6, by_epoch=True, begin=0, end=48),
]
