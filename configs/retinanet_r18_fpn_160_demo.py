# The demo: a small RetinaNet trained from scratch on the embedded shapes dataset, a few minutes
# on two CPU cores. Generate the data first: python tools/make_demo_data.py
_base_ = ['_base_/models/retinanet_r50_fpn.py', '_base_/datasets/demo_coco.py',
          '_base_/default_runtime.py']
model = dict(
    backbone=dict(depth=18, out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False),
    neck=dict(in_channels=[128, 256, 512], out_channels=64, start_level=0,
              add_extra_convs=False, num_outs=3, in_strides=(8, 16, 32)),
    bbox_head=dict(num_classes=3, in_channels=64, feat_channels=64, stacked_convs=2,
                   anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32]),
                   loss_bbox=dict(type='GIoULoss', loss_weight=1.0), reg_decoded_bbox=True))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=24, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=60),
    dict(type='CosineAnnealingLR', T_max=24, eta_min=1e-5, by_epoch=True, begin=0, end=24),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=12))
auto_scale_lr = dict(enable=False, base_batch_size=8)  # the batch the LR above was set for
