# DETR R-50, 150 epochs on COCO 2017 (mmdet reference: 40.1 box AP), 8 GPUs x 2 images.
# The official recipe: AdamW lr 1e-4 (backbone 1e-5), weight decay 1e-4, gradient clipping
# 0.1, lr x0.1 after 100 epochs; DETR's augmentation (flip, then with probability 0.5 either a
# multi-scale resize of the short edge to 480..800, or a resize to 400/500/600, a random
# 384..600 crop and the multi-scale resize). Loads ImageNet weights for the backbone.
_base_ = ['_base_/models/detr_r50.py', '_base_/datasets/coco_detection.py',
          '_base_/default_runtime.py']
model = dict(
    backbone=dict(pretrained='torchvision://resnet50'),
    bbox_head=dict(num_classes=80))
multi_scale = [(1333, s) for s in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='mmcv.RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=multi_scale, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)],
              keep_ratio=True),
         dict(type='RandomSizeCrop', min_size=384, max_size=600),
         dict(type='RandomChoiceResize', scales=multi_scale, keep_ratio=True)]]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(filter_cfg=dict(filter_empty_gt=False),
                                     pipeline=train_pipeline))
max_epochs = 150
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
                        milestones=[100], gamma=0.1)]
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=3))
auto_scale_lr = dict(enable=False, base_batch_size=16)
