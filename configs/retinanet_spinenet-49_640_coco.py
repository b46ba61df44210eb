# RetinaNet with a SpineNet-49 backbone at 640 px on COCO 2017, the published "protocol B"
# recipe (tensorflow/tpu configs/spinenet, the PyTorch port yan-roo/SpineNet-Pytorch
# configs/spinenet/spinenet_49_B_8gpu_640.py): no FPN (SpineNet outputs P3..P7 itself), a
# RetinaNet head with convs shared across levels and BN per level, SyncBN momentum 0.01 /
# eps 1e-3 everywhere, anchors octave base 3 x 3 scales x 3 ratios, scale jitter 0.5..2.0,
# SGD 0.245 (batch 8 x 28), weight decay 4e-5 (none on norms), 350 epochs, x0.1 at 320 and 340.
# Published: 42.8 AP (ReLU, 350 epochs), 44.3 with swish + stochastic depth 0.2 over 500
# epochs (act_cfg=dict(type='SiLU'), drop_path_rate=0.2 in backbone and head activation);
# 28.5M parameters with the TF head's 91 classes (ours with 80: 28.32M). reference/ANCHORS.md 1.3.
# Deviation: the published pipeline crops a 640x640 window after the jitter; the toolbox has no
# box-aware random crop yet, so images keep their jittered size (up to 1280 px) and are padded to
# a multiple of 128 by the data preprocessor.
_base_ = ['_base_/datasets/coco_detection.py', '_base_/default_runtime.py']
norm_cfg = dict(type='SyncBN', momentum=0.01, eps=1e-3, requires_grad=True)
model = dict(
    type='SingleStageDetector',
    data_preprocessor=dict(type='DataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=128),
    backbone=dict(type='SpineNet', arch='49', norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'),
                  drop_path_rate=0.0),
    neck=None,
    bbox_head=dict(
        type='RetinaSepBNHead', num_classes=80, in_channels=256, feat_channels=256,
        stacked_convs=4, num_levels=5, norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'),
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=3, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4, stds=[1.0] * 4),
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                      ignore_iof_thr=-1),
        loss_cls=dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0),
        test_cfg=dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=100)))
img_scale = (640, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=28, num_workers=4,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=350, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.245, momentum=0.9, weight_decay=4e-5),
                     paramwise_cfg=dict(norm_decay_mult=0.0),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2285),
    dict(type='MultiStepLR', begin=0, end=350, by_epoch=True, milestones=[320, 340], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=224)
