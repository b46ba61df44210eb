# GA-RPN head of the CPU-sized BCCD recipes (128-channel R-18-FPN on P2-P6). Squares and
# approximate anchors at scale 4 (16 px on P2), like the RPN's anchors there; GA-RPN's published
# coder stds and loss settings otherwise. Used as {{_base_.ga_rpn_head}}.
ga_rpn_head = dict(
    _delete_=True, type='GARPNHead', in_channels=128, feat_channels=128,
    approx_anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                 scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                 strides=[4, 8, 16, 32, 64]),
    square_anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales=[4],
                                 strides=[4, 8, 16, 32, 64]),
    anchor_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4, stds=[0.07, 0.07, 0.14, 0.14],
                      wh_ratio_clip=1e-6),
    bbox_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4, stds=[0.07, 0.07, 0.11, 0.11]),
    loc_filter_thr=0.01, center_ratio=0.2, ignore_ratio=0.5, outside_weight=0.1,
    ga_assigner=dict(type='ApproxMaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                     min_pos_iou=0.3, ignore_iof_thr=-1),
    ga_sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                    add_gt_as_proposals=False),
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                  ignore_iof_thr=-1),
    sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                 add_gt_as_proposals=False),
    loss_loc=dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
    loss_shape=dict(type='BoundedIoULoss', beta=0.2, loss_weight=1.0),
    loss_cls=dict(type='FocalLoss', gamma=0.0, alpha=-1.0, loss_weight=1.0),
    loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
    test_cfg=dict(nms_pre=1000, max_per_img=1000, iou_threshold=0.7, min_bbox_size=0))
