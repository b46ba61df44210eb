# RefineDet COCO schedule: batch 32, SGD lr 1e-3, momentum 0.9, weight decay 5e-4, 400k
# iterations with x0.1 at 280k and 360k (the official COCO scripts as recalled; unverified),
# 500 iterations of linear warm-up.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400000, val_interval=20000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=400000, milestones=[280000, 360000],
         gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=32)
