# CPU-sized RefineDet320 on BCCD (3 blood-cell classes), trained from scratch (no pretrained
# weights offline): 8 epochs of 26 iterations. Same architecture as RefineDet VGG16 with a
# quarter of the widths (2.25M parameters), BatchNorm in the backbone (VGG without norms does
# not train from scratch in a few epochs), AdamW and a cosine schedule. Images keep their aspect
# ratio (640x480 -> 320x240, padded to 320x256).
# Measured (validation every 2 epochs, ValLossHook from the dataset base): val mAP@0.5 0.852
# (RBC 0.828, WBC 0.995, Platelets 0.733; area AP), 8 min wall on two CPU cores (two runs side
# by side, both seed 0, identical at every validation; the README's results table). The curves
# in docs/figures/refinedet_vgg16_320_bccd_curves.png are of an earlier run (0.817).
_base_ = ['_base_/models/refinedet_vgg16.py', '_base_/datasets/voc_bccd.py',
          '_base_/default_runtime.py']
model = dict(
    backbone=dict(stage_channels=(16, 32, 64, 128, 128), fc_channels=256,
                  extra_channels=(64, 128), norm_cfg=dict(type='BN')),
    neck=dict(in_channels=(128, 128, 256, 128), out_channels=64),
    bbox_head=dict(num_classes=3, in_channels=(128, 128, 256, 128), feat_channels=64,
                   test_cfg=dict(score_thr=0.01, nms_pre=1000, iou_threshold=0.45,
                                 max_per_img=100)))
train_dataloader = dict(batch_size=8, num_workers=1)
val_dataloader = dict(batch_size=8, num_workers=1)
test_dataloader = val_dataloader
max_epochs = 8
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-5, by_epoch=True, begin=0,
         end=max_epochs),
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=4, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False, base_batch_size=8)  # the batch the LR above was set for
