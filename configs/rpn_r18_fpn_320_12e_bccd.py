# RPN R-18-FPN at 320 px on BCCD, proposal-only: faster_rcnn_r18_fpn_320_12e_bccd.py without
# the RoI head (same budget), evaluated by class-agnostic proposal recall AR@100/300/1000.
_base_ = ['./faster_rcnn_r18_fpn_320_12e_bccd.py']
model = dict(roi_head=None)
val_evaluator = dict(_delete_=True, type='CocoMetric', metric='proposal',
                     proposal_nums=(100, 300, 1000))
test_evaluator = val_evaluator
