# UNETR on BTCV (Synapse multi-organ CT, 13 organs + background), the paper's setting as in
# Project-MONAI research-contributions UNETR/BTCV: CT intensities clipped to [-175, 250] HU and
# scaled to [0, 1], resampled to 1.5 x 1.5 x 2.0 mm, 96^3 crops centred on foreground or
# background voxels (1:1), flips on each axis (p 0.1) and 90-degree rotations in the axial plane
# (p 0.1); AdamW 1e-4, weight decay 1e-5, Dice + CE, 25,000 iterations; gaussian sliding-window
# inference, overlap 0.5. As the reference, 4 crops per volume at batch 1 (``flatten_collate``
# makes the 4 crops 4 samples of the batch). Expects BTCV in the MSD layout (dataset.json,
# imagesTr, labelsTr) under data/btcv, with a held-out val split as DecathlonDataset makes it.
_base_ = ['_base_/models/unetr.py', '_base_/default_runtime.py']
dataset_type = 'DecathlonDataset'
data_root = 'data/btcv'
crop_size = (96, 96, 96)
intensity = dict(type='ScaleIntensityRange', a_min=-175, a_max=250, b_min=0.0, b_max=1.0,
                 clip=True)
spacing = dict(type='Spacing', pixdim=(1.5, 1.5, 2.0))
train_pipeline = [
    dict(type='LoadVolume', cache=True), dict(type='LoadVolumeAnnotation', cache=True),
    intensity, spacing,
    dict(type='RandCropByPosNegLabel', size=crop_size, pos=1, neg=1, num_samples=4),
    dict(type='RandFlip3D', prob=0.1, axes=(0,)), dict(type='RandFlip3D', prob=0.1, axes=(1,)),
    dict(type='RandFlip3D', prob=0.1, axes=(2,)),
    dict(type='RandRotate90', prob=0.1, max_k=3, axes=(0, 1)),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadVolume'), dict(type='LoadVolumeAnnotation'), intensity, spacing,
                 dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True), collate_fn=dict(type='flatten_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
# the metric reads the original labels: the test pipeline resampled them
val_evaluator = dict(type='DiceMetric', gt_from_file=True)
test_evaluator = val_evaluator
max_iters = 25000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=500)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-5))
param_scheduler = []
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=500, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
