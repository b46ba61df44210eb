# Mosaic + MixUp variant of the 12-epoch BCCD budget (issue 17): YOLOX's multi-image mixing
# (toolbox/datasets/transforms/mix.py) in front of the base's flip and colour jitter. The VOC
# dataset loads and resizes (320 px, keeping the ratio); MultiImageMixDataset
# (toolbox/datasets/wrappers.py) puts 4 images on a 640x640 mosaic, RandomAffine scales it by
# 0.5-1.5 (small rotation, shear and translation) and crops the central 320x320, MixUp blends
# in a fifth image 0.5 / 0.5 at a 0.8-1.6 jitter. MixSwitchHook trains the last 2 of the 12
# epochs on plain images (YOLOX: the last 15 of 300), which also restarts the persistent loader
# workers so that they see the switch. Everything else is the 12e baseline (same seed 0).
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
img_scale = (320, 320)  # (w, h)
load_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
]
mix_pipeline = [
    dict(type='Mosaic', img_scale=img_scale, center_ratio_range=(0.5, 1.5), pad_val=114.0),
    dict(type='RandomAffine', scaling_ratio_range=(0.5, 1.5),
         border=(-img_scale[0] // 2, -img_scale[1] // 2)),
    dict(type='MixUp', img_scale=img_scale, ratio_range=(0.8, 1.6), pad_val=114.0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Albu', transforms=[dict(type='RandomBrightnessContrast', p=0.3),
                                  dict(type='HueSaturationValue', p=0.3)]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(
    _delete_=True, type='MultiImageMixDataset',
    dataset=dict(type={{_base_.dataset_type}}, data_root={{_base_.data_root}},
                 metainfo={{_base_.metainfo}}, ann_file='ImageSets/Main/train.txt',
                 data_prefix=dict(img='JPEGImages', ann='Annotations'),
                 filter_cfg=dict(filter_empty_gt=True), pipeline=load_pipeline),
    pipeline=mix_pipeline))
# the base's validation-loss hook, plus the switch to plain images for the last epochs
custom_hooks = [
    {{_base_.val_loss_hook}},
    dict(type='MixSwitchHook', num_last_epochs=2),
]
