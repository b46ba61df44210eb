# The embedded demo dataset (tools/make_demo_data.py writes it to data/demo/), COCO format.
dataset_type = 'CocoDataset'
data_root = 'data/demo/coco/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=16, hue_delta=9),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
                     metric='bbox')
test_evaluator = val_evaluator
