# The CamVid budget that long-tail comparisons share (issue 13): deeplabv3plus_r18-d16_camvid.py
# with 600 iterations (the poly schedule follows) and one validation at the end. A variant
# inherits this file and changes one thing (same seed 0).
_base_ = ['deeplabv3plus_r18-d16_camvid.py']
max_iters = 600
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=10, end=max_iters),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
