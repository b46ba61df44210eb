# RPN R-50-FPN, 1x schedule, COCO 2017, proposal-only (mmdet reference: AR@1000 58.2).
# The Faster R-CNN model without its RoI head; evaluated by class-agnostic proposal recall.
_base_ = ['./faster_rcnn_r50_fpn_1x_coco.py']
model = dict(roi_head=None)
val_evaluator = dict(type='CocoMetric', metric='proposal', proposal_nums=(100, 300, 1000))
test_evaluator = val_evaluator
