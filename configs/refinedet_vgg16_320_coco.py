# RefineDet320 VGG16 on COCO 2017 (80 classes; 36,100,484 parameters). Paper, test-dev:
# 29.4 AP [UNVERIFIED, recalled; reference/ANCHORS.md 3.1].
_base_ = ['_base_/models/refinedet_vgg16.py', '_base_/datasets/coco_detection.py',
          '_base_/schedules/refinedet_coco_400k.py', '_base_/default_runtime.py']
model = dict(backbone=dict(pretrained='torchvision://vgg16'), bbox_head=dict(num_classes=80))
img_scale = (320, 320)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=18),
    dict(type='Expand', mean=(103.53, 116.28, 123.675), ratio_range=(1, 4), prob=0.5),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=32, num_workers=4,
                        dataset=dict(filter_cfg=dict(filter_empty_gt=True, min_size=0),
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# iteration-based logging and checkpoints (default_runtime is epoch-based)
default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=20000,
                                     max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
