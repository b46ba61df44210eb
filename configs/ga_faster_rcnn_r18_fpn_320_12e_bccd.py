# GA-Faster R-CNN R-18-FPN at 320 px on BCCD: faster_rcnn_r18_fpn_320_12e_bccd.py with the RPN
# replaced by GA-RPN (_base_/models/ga_rpn_r18_fpn_bccd_head.py). One change: same budget, same
# RoI head and proposal numbers.
_base_ = ['./faster_rcnn_r18_fpn_320_12e_bccd.py', '_base_/models/ga_rpn_r18_fpn_bccd_head.py']
model = dict(rpn_head={{_base_.ga_rpn_head}})
