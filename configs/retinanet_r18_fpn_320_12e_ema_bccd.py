# EMA variant of the 12-epoch BCCD budget (issue 17): validation and checkpoints use an
# exponential moving average of the weights (mmengine EMAHook, buffers averaged too). Momentum
# 0.01 averages over ~100 of the run's 312 iterations (26 per epoch); everything else is the 12e
# baseline (same seed 0).
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
custom_hooks = [
    {{_base_.val_loss_hook}},
    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=0.01,
         update_buffers=True, priority=49),
]
