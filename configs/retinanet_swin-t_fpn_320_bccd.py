# RetinaNet Swin-T-FPN at 320 px on BCCD (3 blood-cell classes), trained from scratch (no
# pretrained weights are available offline). Same data, schedule and head as
# retinanet_r18_fpn_320_bccd.py, so the two compare backbones: Swin-T itself at full width
# (27.5M backbone parameters; timm / official / mmdet ImageNet weights load through
# `pretrained=`). FPN takes the stride 8/16/32 stages (192, 384, 768 ch); at 320 px they are
# 40, 20 and 10 tokens wide, larger than the 7-token window, so every odd block shifts.
# Optimiser: the Swin detection recipe's AdamW with weight decay 0.05 and no decay on norms and
# the relative position bias tables, at lr 2e-4 (the recipe's 1e-4 at batch 16 is for
# fine-tuning a pretrained backbone; from scratch with batch 8 a higher rate with the same
# warm-up). Stochastic depth 0.1: the low end of the detection recipes (0.2 for Swin-T), as
# ~200 training images and 48 epochs leave little room for slower convergence.
_base_ = ['_base_/models/retinanet_r50_fpn.py', '_base_/datasets/voc_bccd.py',
          '_base_/default_runtime.py']
model = dict(
    backbone=dict(_delete_=True, type='SwinTransformer', arch='T', drop_path_rate=0.1,
                  out_indices=(1, 2, 3), frozen_stages=-1),
    neck=dict(in_channels=[192, 384, 768], out_channels=128, start_level=0,
              add_extra_convs='on_input', num_outs=4, in_strides=(8, 16, 32)),
    bbox_head=dict(num_classes=3, in_channels=128, feat_channels=128, stacked_convs=3,
                   anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32, 64]),
                   loss_bbox=dict(type='GIoULoss', loss_weight=2.0), reg_decoded_bbox=True,
                   test_cfg=dict(score_thr=0.05, max_per_img=150)))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=48, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                                    weight_decay=0.05),
                     paramwise_cfg=dict(custom_keys=dict(
                         relative_position_bias_table=dict(decay_mult=0.),
                         norm=dict(decay_mult=0.))),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=48, eta_min=1e-6, by_epoch=True, begin=0, end=48),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=12, max_keep_ckpts=1))
