# Faster R-CNN R-18-FPN at 320 px on BCCD, the 12-epoch CPU budget of
# retinanet_r18_fpn_320_12e_bccd.py (same data, schedule, optimiser, seed; only the model
# changes). CPU-sized: 128-channel FPN on P2-P6, RPN anchors 16-256 px (platelets are ~12 px at
# this scale), RoI head with 512-wide FCs and 256 sampled RoIs per image.
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(
    _delete_=True,
    type='TwoStageDetector',
    data_preprocessor=dict(type='DataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_eval=False, style='pytorch'),
    neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=128, num_outs=5,
              in_strides=(4, 8, 16, 32)),
    rpn_head=dict(
        type='RPNHead', in_channels=128, feat_channels=128,
        anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[0.5, 1.0, 2.0],
                              strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4, stds=[1.0] * 4),
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                      match_low_quality=True, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                     add_gt_as_proposals=False),
        loss_cls=dict(type='FocalLoss', gamma=0.0, alpha=-1.0, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        test_cfg=dict(nms_pre=1000, max_per_img=1000, iou_threshold=0.7, min_bbox_size=0)),
    roi_head=dict(
        type='StandardRoIHead', num_classes=3, in_channels=128, fc_out_channels=512,
        roi_extractor=dict(type='MultiLevelRoIAlign', output_size=7, sampling_ratio=0,
                           aligned=True, featmap_strides=[4, 8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4, stds=[0.1, 0.1, 0.2, 0.2]),
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=256, pos_fraction=0.25, neg_pos_ub=-1,
                     add_gt_as_proposals=True),
        loss_cls=dict(type='CrossEntropyLoss', ignore_index=-100, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        test_cfg=dict(score_thr=0.05, iou_threshold=0.5, max_per_img=150)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=2000, max_per_img=1000, iou_threshold=0.7,
                                     min_bbox_size=0)))
