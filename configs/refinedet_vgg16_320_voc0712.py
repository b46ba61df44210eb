# RefineDet320 VGG16 on VOC 07+12, tested on VOC2007 test (paper: 80.0 mAP; PyTorch port 79.81).
# Schedule of the RefineDet PyTorch port: batch 32, SGD lr 1e-3, momentum 0.9, weight decay
# 5e-4, 120k iterations with x0.1 at 80k and 100k. The backbone starts from torchvision's
# ImageNet VGG16 (fc6/fc7 decimated from its classifier); offline, give a local path or
# model.backbone.pretrained=None.
_base_ = ['_base_/models/refinedet_vgg16.py', '_base_/datasets/voc0712.py',
          '_base_/default_runtime.py']
model = dict(backbone=dict(pretrained='torchvision://vgg16'), bbox_head=dict(num_classes=20))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=120000, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=120000, milestones=[80000, 100000],
         gamma=0.1),
]
default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10000,
                                     max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=32)
