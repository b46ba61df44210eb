# BCCD blood-cell detection (Pascal VOC layout, 3 classes), ../shared/data/bccd by default.
dataset_type = 'VOCDataset'
data_root = '../shared/data/bccd/'
metainfo = dict(classes=('RBC', 'WBC', 'Platelets'))
img_scale = (320, 320)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Albu', transforms=[dict(type='RandomBrightnessContrast', p=0.3),
                                  dict(type='HueSaturationValue', p=0.3)]),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='ImageSets/Main/train.txt',
                 data_prefix=dict(img='JPEGImages', ann='Annotations'),
                 filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='ImageSets/Main/val.txt',
                 data_prefix=dict(img='JPEGImages', ann='Annotations'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
# VOC AP@0.5 (the BCCD literature's number) and COCO box AP over IoU 0.5:0.95 (localisation
# quality), the latter with ground truth built in memory from the VOC annotations
val_evaluator = [dict(type='VOCMetric', iou_thrs=0.5, eval_mode='area'),
                 dict(type='CocoMetric', metric='bbox', classwise=True)]
test_evaluator = val_evaluator
# Validation loss (train-frame ground truth, no random augmentation), logged next to the metrics
val_loss_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='PackInputs'),
]
# a child config that sets custom_hooks keeps it with {{_base_.val_loss_hook}}
val_loss_hook = dict(type='ValLossHook', dataloader=dict(
    batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='ImageSets/Main/val.txt',
                 data_prefix=dict(img='JPEGImages', ann='Annotations'),
                 pipeline=val_loss_pipeline)))
custom_hooks = [val_loss_hook]
# Test-time augmentation (tools/test.py --tta): 2 scales x flip / no flip, merged by weighted
# box fusion (toolbox/models/tta.py). The annotations are loaded after the geometric views so
# that the ground truth stays in the original frame, as in test_pipeline.
tta_model = dict(type='DetTTAModel', merge='wbf', iou_thr=0.55, max_per_img=100)
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(320, 320), keep_ratio=True),
         dict(type='Resize', scale=(384, 384), keep_ratio=True)],
        [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackInputs')]]),
]
