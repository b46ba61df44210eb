# GA-RetinaNet R-18-FPN at 320 px on BCCD: retinanet_r18_fpn_320_12e_bccd.py (the 12-epoch
# comparison budget, job base_r18_12e) with the RetinaNet head replaced by GA-RetinaNet. Kept
# from the baseline so that only the anchoring changes: 128 channels, 3 stacked convs,
# anchor scale 2 (octave base 2 for the approximate anchors, squares of 2 * stride), the GIoU box
# loss on decoded boxes (weight 2), score_thr 0.05 and 150 detections.
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(
    bbox_head=dict(
        _delete_=True, type='GARetinaHead', num_classes=3, in_channels=128, stacked_convs=3,
        feat_channels=128,
        approx_anchor_generator=dict(type='AnchorGenerator', octave_base_scale=2,
                                     scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                     strides=[8, 16, 32, 64]),
        square_anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales=[2],
                                     strides=[8, 16, 32, 64]),
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
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0), reg_decoded_bbox=True,
        test_cfg=dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=150)))
