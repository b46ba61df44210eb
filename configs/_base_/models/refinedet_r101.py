# RefineDet ResNet-101: sources res3b3, res4b22, res5c (layer2..layer4) and one extra residual
# block (res6, 512 channels), strides 8..64; head as RefineDet VGG16 (reference/ANCHORS.md 3.1).
model = dict(
    type='SingleStageDetector',
    data_preprocessor=dict(type='DataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=64),
    backbone=dict(type='RefineDetResNet', depth=101, extra_planes=128, frozen_stages=1,
                  norm_eval=True, style='pytorch'),
    # the transfer connection blocks are the neck; the head reads both the backbone sources (ARM)
    # and the neck's outputs (ODM)
    neck=dict(type='TCB', in_channels=(512, 1024, 2048, 512), out_channels=256,
              in_strides=(8, 16, 32, 64)),
    bbox_head=dict(
        type='RefineDetHead', num_classes=80, in_channels=(512, 1024, 2048, 512),
        feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', strides=[8, 16, 32, 64],
                              base_sizes=[32, 64, 128, 256], scales=[1.0],
                              ratios=[1.0, 0.5, 2.0], center_offset=0.5),
        bbox_coder=dict(type='DeltaXYWHBoxCoder', stds=(0.1, 0.1, 0.2, 0.2)),
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                      gt_max_assign_all=False),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
        neg_pos_ratio=3, objectness_thr=0.01,
        test_cfg=dict(score_thr=0.01, nms_pre=1000, iou_threshold=0.45, max_per_img=500)))
