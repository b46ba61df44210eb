# Pascal VOC 2012 segmentation with the SBD-augmented training set (trainaug, 10,582 images;
# ImageSets/Segmentation/aug.txt and SegmentationClassAug/ as written by mmseg's voc_aug
# converter), evaluated on val (1,449 images) at the original resolution. 21 classes, 255 ignored.
# Class maps are read as single-channel index PNGs from SegmentationClassAug/ for val too (the
# devkit's SegmentationClass/ PNGs are palette images: see VOCSegDataset).
# Training: random scale 0.5-2.0 (short side 256-1024), 512x512 crops in which no class covers
# more than 75% of the pixels, flip, photometric distortion.
dataset_type = 'VOCSegDataset'
data_root = 'data/VOCdevkit/VOC2012/'
crop_size = (512, 512)  # (h, w)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=False, with_seg=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackInputs'),
]
# No Resize at test time: the ground truth must keep the size of the network input (the data
# preprocessor pads it to the batch shape), and DeepLab evaluates VOC at the original size.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=False, with_seg=True),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='ImageSets/Segmentation/train.txt',
                 extra_ann_files=('ImageSets/Segmentation/aug.txt',),
                 data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='ImageSets/Segmentation/val.txt',
                 data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric')  # ignore_index: IGNORE_INDEX (255)
test_evaluator = val_evaluator
