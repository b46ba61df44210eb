# GA-RetinaNet R-50-FPN, 1x schedule, COCO 2017 (mmdet reference: 37.0 box AP; 37,600,439
# parameters as mmdet's ga-retinanet_r50_fpn_1x_coco.py).
_base_ = ['./retinanet_r50_fpn_800x1333_1x_coco.py']
model = dict(
    bbox_head=dict(
        _delete_=True, type='GARetinaHead', num_classes=80, in_channels=256, stacked_convs=4,
        feat_channels=256,
        approx_anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                     scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                     strides=[8, 16, 32, 64, 128]),
        square_anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales=[4],
                                     strides=[8, 16, 32, 64, 128]),
        anchor_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4, stds=[1.0] * 4,
                          wh_ratio_clip=1e-6),
        bbox_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4, stds=[1.0] * 4),
        loc_filter_thr=0.01, center_ratio=0.2, ignore_ratio=0.5, outside_weight=0.1,
        ga_assigner=dict(type='ApproxMaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                         min_pos_iou=0.4, ignore_iof_thr=-1),
        ga_sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                        add_gt_as_proposals=False),
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                      ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        loss_loc=dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_shape=dict(type='BoundedIoULoss', beta=0.2, loss_weight=1.0),
        loss_cls=dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.04, loss_weight=1.0),
        test_cfg=dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=100)))
