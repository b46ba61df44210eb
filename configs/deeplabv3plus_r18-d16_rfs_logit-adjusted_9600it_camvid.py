# deeplabv3plus_r18-d16_rfs_logit-adjusted_4800it_camvid.py trained twice as long again: 9600
# iterations (104 epochs), warm-up and poly decay stretched to the new length, validation every
# 1600, best checkpoint by val mIoU. The 4800-iteration run was still rising (+4.5 mIoU over its
# last 800 iterations).
# Measured (seed 0, 2 CPU cores, 107 min alone at 0.57-0.68 s/iteration): val mIoU 60.34 / mAcc
# 76.89 / aAcc 89.91 (35.75, 54.09, 56.91, 56.79, 58.50 at 1600-8000 iterations); Sky 93.2,
# Building 77.5, Pole 9.0, Road 95.6, Pavement 84.9, Tree 89.2, SignSymbol 24.2, Fence 50.4,
# Car 56.3, Pedestrian 23.6, Bicyclist 59.8. The best CamVid recipe here: every class above 0,
# mIoU above 60.
_base_ = ['deeplabv3plus_r18-d16_rfs_logit-adjusted_4800it_camvid.py']
max_iters = 9600
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1600)
default_hooks = dict(checkpoint=dict(interval=1600))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=10, end=max_iters),
]
