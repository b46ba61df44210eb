# Pascal VOC 07+12: train on VOC2007 trainval + VOC2012 trainval (16,551 images), test on
# VOC2007 test (4,952) with the 11-point AP of VOC2007. Data under data/VOCdevkit/.
# SSD augmentation: photometric distortion, Expand (zoom out), MinIoURandomCrop (zoom in),
# resize to a fixed square, flip.
dataset_type = 'VOCDataset'
data_root = 'data/VOCdevkit/'
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
    dict(type='LoadAnnotations', with_bbox=True),  # after Resize: ground truth stays original
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ConcatDataset', datasets=[
        dict(type=dataset_type, data_root=data_root, ann_file='VOC2007/ImageSets/Main/trainval.txt',
             data_prefix=dict(img='VOC2007/JPEGImages', ann='VOC2007/Annotations'),
             filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline),
        dict(type=dataset_type, data_root=data_root, ann_file='VOC2012/ImageSets/Main/trainval.txt',
             data_prefix=dict(img='VOC2012/JPEGImages', ann='VOC2012/Annotations'),
             filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline),
    ]))
val_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='VOC2007/ImageSets/Main/test.txt',
                 data_prefix=dict(img='VOC2007/JPEGImages', ann='VOC2007/Annotations'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='VOCMetric', iou_thrs=0.5, eval_mode='11points')
test_evaluator = val_evaluator
