# RetinaNet R-18-FPN at 320 px on BCCD (3 blood-cell classes), trained from scratch (no
# pretrained weights are available offline). Smaller anchors (octave base 2) because platelets
# are ~12 px at this scale. About 20 minutes on two CPU cores; ~3 on one GPU.
_base_ = ['_base_/models/retinanet_r50_fpn.py', '_base_/datasets/voc_bccd.py',
          '_base_/default_runtime.py']
model = dict(
    backbone=dict(depth=18, out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False),
    neck=dict(in_channels=[128, 256, 512], out_channels=128, start_level=0,
              add_extra_convs='on_input', num_outs=4, in_strides=(8, 16, 32)),
    bbox_head=dict(num_classes=3, in_channels=128, feat_channels=128, stacked_convs=3,
                   anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32, 64]),
                   loss_bbox=dict(type='GIoULoss', loss_weight=2.0), reg_decoded_bbox=True,
                   test_cfg=dict(score_thr=0.05, max_per_img=150)))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=48, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=48, eta_min=1e-5, by_epoch=True, begin=0, end=48),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=12, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False, base_batch_size=8)  # the batch the LR above was set for
