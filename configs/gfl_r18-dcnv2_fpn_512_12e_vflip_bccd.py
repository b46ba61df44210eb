# gfl_r18-dcnv2_fpn_512_12e_bccd.py with a vertical flip (p 0.5) after the horizontal one in
# training: blood-smear images have no up or down, so the two flips give four orientations of
# every image. Same seed, schedule and validation (512 px, single view): an ablation row.
_base_ = ['./gfl_r18-dcnv2_fpn_512_12e_bccd.py']
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(512, 512), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='Albu', transforms=[dict(type='RandomBrightnessContrast', p=0.3),
                                  dict(type='HueSaturationValue', p=0.3)]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# Measured (seed 0, 2-core Xeon, 35 min, 6.5-7.2 s/iteration): val VOC mAP@0.5 0.8972 (RBC
# 0.848, WBC 0.978, Platelets 0.866), COCO box mAP 0.5752 (AP75 0.637), against 0.9029 / 0.5825
# for the base retrained on the same machine: the extra orientations slow the fit at this
# budget. --tta with the four flips (none / horizontal / vertical / both) at 512 px: 0.9001 /
# COCO 0.5879 (the base model with the same views: 0.9037 / 0.5869).
