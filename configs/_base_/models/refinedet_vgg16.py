# RefineDet VGG16 (Zhang et al. 2018): ARM + TCB + ODM, 34,440,884 parameters at 20 VOC classes
# (21 with background), 36,100,484 at 80 COCO classes (reference/ANCHORS.md 3.1).
model = dict(
    type='SingleStageDetector',
    # torchvision's ImageNet statistics, since the backbone takes torchvision VGG16 weights
    data_preprocessor=dict(type='DataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=64),
    backbone=dict(type='VGG', stage_channels=(64, 128, 256, 512, 512), fc_channels=1024,
                  extra_channels=(256, 512), fc6_dilation=3, l2_norm_scales=(10.0, 8.0)),
    # the transfer connection blocks are the neck; the head reads both the backbone sources (ARM)
    # and the neck's outputs (ODM)
    neck=dict(type='TCB', in_channels=(512, 512, 1024, 512), out_channels=256,
              in_strides=(8, 16, 32, 64)),
    bbox_head=dict(
        type='RefineDetHead', num_classes=20, in_channels=(512, 512, 1024, 512),
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
