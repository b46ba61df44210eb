# retinanet_r18_fpn_512_12e_bccd.py with multi-scale training: each training image is resized to
# one of 448-576 px (step 32, long-edge cap, ratio kept) instead of always 512; validation and
# test stay at 512. Same seed, optimiser, schedule and anchors; about the same cost per epoch
# (the mean training area is ~1.01x that of 512 px).
# Measured (seed 0, 2 CPU cores, 26 min, 4.8 s/iteration): val VOC mAP@0.5 0.8760 (RBC 0.815,
# WBC 0.991, Platelets 0.822): 0.019 below single-scale 512 px (0.8952) at this 12-epoch budget.
_base_ = ['./retinanet_r18_fpn_512_12e_bccd.py']
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(s, s) for s in range(448, 577, 32)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Albu', transforms=[dict(type='RandomBrightnessContrast', p=0.3),
                                  dict(type='HueSaturationValue', p=0.3)]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
