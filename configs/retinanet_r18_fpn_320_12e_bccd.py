# The 12-epoch BCCD budget that component comparisons share (ASFF, long-tail losses,
# GA-RetinaNet, ...): retinanet_r18_fpn_320_bccd.py with the cosine schedule shortened to 12
# epochs and one validation at the end. A variant inherits this file and changes one thing, so
# rows of the README's results table at this budget differ by that one thing (same seed 0).
_base_ = ['./retinanet_r18_fpn_320_bccd.py']
train_cfg = dict(max_epochs=12, val_interval=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=12, eta_min=1e-5, by_epoch=True, begin=0, end=12),
]
