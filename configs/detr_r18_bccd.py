# DETR sized for two CPU cores on BCCD (3 blood-cell classes), trained from scratch (no
# pretrained weights offline). Same architecture and set criterion as DETR R-50, scaled down:
# ResNet-18 with trainable BN (nothing to freeze without pretrained weights), stride 32
# (10 x 8 tokens at 320 x 240; DC5 would cost ~1.4x per iteration), width 128, 3 encoder / 3
# decoder layers, FFN 512, 8 heads, 50 queries (BCCD images have at most 30 cells). AdamW 2e-4
# for everything (the 0.1 backbone multiplier of the recipe is for a pretrained backbone),
# gradient clipping 0.1, step decay at 4/5 of the schedule. 32 epochs = 832 iterations.
_base_ = ['_base_/models/detr_r50.py', '_base_/datasets/voc_bccd.py',
          '_base_/default_runtime.py']
embed_dims = 128
model = dict(
    backbone=dict(depth=18, out_indices=(3,), frozen_stages=-1, norm_cfg=dict(type='BN'),
                  norm_eval=False),
    neck=dict(in_channels=[512], out_channels=embed_dims, in_strides=(32,)),
    positional_encoding=dict(num_feats=embed_dims // 2),
    encoder=dict(num_layers=3, embed_dims=embed_dims, feedforward_channels=512),
    decoder=dict(num_layers=3, embed_dims=embed_dims, feedforward_channels=512),
    bbox_head=dict(num_classes=3, embed_dims=embed_dims, test_cfg=dict(max_per_img=100)),
    num_queries=50, embed_dims=embed_dims)
max_epochs = 32
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=16)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
                     clip_grad=dict(max_norm=0.1, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[26], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=16, max_keep_ckpts=1))
