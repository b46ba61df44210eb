# RetinaNet R-50-FPN, 1x schedule, COCO 2017 (mmdet reference: 36.5 box AP).
_base_ = ['_base_/models/retinanet_r50_fpn.py', '_base_/datasets/coco_detection.py',
          '_base_/schedules/schedule_1x.py', '_base_/default_runtime.py']
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
