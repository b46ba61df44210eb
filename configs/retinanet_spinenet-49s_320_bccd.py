# RetinaNet SpineNet-49S on BCCD at 320 px, CPU-sized: the shared BCCD recipe
# (retinanet_r18_fpn_320_12e_bccd.py: data, augmentation, AdamW, cosine schedule, seed 0) with
# the ResNet-18 + FPN replaced by SpineNet-49S (no neck: its P3..P7 endpoints, 128 channels) and
# the RetinaNet head by RetinaSepBNHead (shared convs, BN per level, 3 convs of 128 like the
# baseline's head) over the five levels, anchors at strides 8..128. Plain BN and ReLU (the
# 350-epoch variant); trained from scratch like the baseline.
# Schedule: 4 epochs (cosine over 4, one validation at the end), not the baseline's 12: on the
# 2-core CPU one SpineNet-49S training step takes ~2.6x the R-18-FPN step (measured with both
# models alternating in one process: 25.9 s vs 9.9 s per batch of 8 at 320x256 under load), although
# it has fewer MACs (4.10 vs 4.88 GMACs per 320x256 image): its odd widths (41, 83, 166, 664 ...)
# and stride-4 resampling run slowly in oneDNN's conv backward. 4 epochs fit the 10-minute budget
# of one queued run; the baseline's 12-epoch budget would take about 25 minutes alone.
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(
    backbone=dict(_delete_=True, type='SpineNet', arch='49S', norm_cfg=dict(type='BN'),
                  act_cfg=dict(type='ReLU', inplace=True)),
    neck=None,
    bbox_head=dict(type='RetinaSepBNHead', in_channels=128, feat_channels=128, num_levels=5,
                   norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU', inplace=True),
                   anchor_generator=dict(strides=[8, 16, 32, 64, 128])))
train_cfg = dict(max_epochs=4, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=4, eta_min=1e-5, by_epoch=True, begin=0, end=4),
]
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=1))
