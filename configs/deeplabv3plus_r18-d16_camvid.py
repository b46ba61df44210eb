# CPU-sized DeepLab v3+ on CamVid, trained from scratch (no pretrained weights offline):
# dilated ResNet-18 at output stride 16 (rates 6/12/18), separable ASPP and decoder 128
# channels wide (48-channel C2 projection), no auxiliary head. 180x240 crops of the image
# rescaled by 0.5-1.5, batch 4, AdamW 2e-3 with a 10-iteration warm-up and poly decay,
# 1200 iterations (13 epochs), validation every 400 on the whole 480x360 val images.
# Measured: val mIoU 33.63 / mAcc 44.05 / aAcc 75.98 (24.62 at 400 it, 29.49 at 800), 20 min
# wall on two CPU cores shared with another run; predictions in
# docs/figures/deeplabv3plus_r18_camvid_val.png. ResNet-18 at output stride 8 costs about
# 2.2x per iteration. Raise max_iters for a better model (the schedule follows it).
_base_ = ['_base_/models/deeplabv3plus_r50-d8.py', '_base_/datasets/camvid.py',
          '_base_/default_runtime.py']
max_iters = 1200
crop_size = (180, 240)  # (h, w)
model = dict(
    backbone=dict(depth=18, out_indices=(0, 3), strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
    decode_head=dict(in_channels=512, in_index=1, c1_in_channels=64, c1_in_index=0,
                     channels=128, dilations=(6, 12, 18), num_classes=11),
    auxiliary_head=None)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=False, with_seg=True),
    dict(type='RemapLabels'),
    dict(type='RandomResize', scale=(480, 360), ratio_range=(0.5, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=4, num_workers=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, num_workers=1)
test_dataloader = val_dataloader
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=400)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=10, end=max_iters),
]
default_hooks = dict(logger=dict(interval=10, log_metric_by_epoch=False),
                     checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=4)  # the batch the LR above was set for
