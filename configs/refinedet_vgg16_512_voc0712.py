# RefineDet512 VGG16 on VOC 07+12 (paper: 81.8 mAP on VOC2007 test; PyTorch port 80.50).
# Same recipe as RefineDet320 with 512x512 inputs (16,320 anchors instead of 6,375).
_base_ = ['refinedet_vgg16_320_voc0712.py']
img_scale = (512, 512)
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
data_root = 'data/VOCdevkit/'
train_dataloader = dict(dataset=dict(type='ConcatDataset', datasets=[
    dict(type='VOCDataset', data_root=data_root, ann_file='VOC2007/ImageSets/Main/trainval.txt',
         data_prefix=dict(img='VOC2007/JPEGImages', ann='VOC2007/Annotations'),
         filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline),
    dict(type='VOCDataset', data_root=data_root, ann_file='VOC2012/ImageSets/Main/trainval.txt',
         data_prefix=dict(img='VOC2012/JPEGImages', ann='VOC2012/Annotations'),
         filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline),
]))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
