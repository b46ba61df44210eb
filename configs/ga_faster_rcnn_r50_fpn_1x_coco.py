# GA-Faster R-CNN R-50-FPN, 1x schedule, COCO 2017 (mmdet, caffe-style R-50: 39.9 box AP):
# GA-RPN proposals (300 per image) feeding the standard RoI head, with mmdet's GA-Faster RoI
# settings (stds 0.05/0.05/0.1/0.1, IoU 0.6 assignment, 256 sampled RoIs, score_thr 1e-3).
_base_ = ['./faster_rcnn_r50_fpn_1x_coco.py']
model = dict(
    rpn_head=dict(
        _delete_=True, type='GARPNHead', in_channels=256, feat_channels=256,
        approx_anchor_generator=dict(type='AnchorGenerator', octave_base_scale=8,
                                     scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                     strides=[4, 8, 16, 32, 64]),
        square_anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales=[8],
                                     strides=[4, 8, 16, 32, 64]),
        anchor_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4,
                          stds=[0.07, 0.07, 0.14, 0.14], wh_ratio_clip=1e-6),
        bbox_coder=dict(type='DeltaXYWHBoxCoder', means=[0.0] * 4,
                        stds=[0.07, 0.07, 0.11, 0.11]),
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
        test_cfg=dict(nms_pre=1000, max_per_img=300, iou_threshold=0.7, min_bbox_size=0)),
    roi_head=dict(
        bbox_coder=dict(stds=[0.05, 0.05, 0.1, 0.1]),
        assigner=dict(pos_iou_thr=0.6, neg_iou_thr=0.6, min_pos_iou=0.6),
        sampler=dict(num=256),
        test_cfg=dict(score_thr=1e-3)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=2000, max_per_img=300, iou_threshold=0.7,
                                     min_bbox_size=0)))
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
