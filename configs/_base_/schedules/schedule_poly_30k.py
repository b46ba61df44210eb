# DeepLab's schedule (v3 / v3+ papers, VOC trainaug): SGD momentum 0.9, "poly" learning rate
# lr * (1 - iter / max_iter) ** 0.9 from 0.007, 30k iterations of batch 16. Iteration-based
# logging and checkpoints are set by the recipe (default_hooks / log_processor live in
# default_runtime.py, and mmengine refuses a key defined in two bases).
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.007, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=30000,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=30000, val_interval=3000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=16)
