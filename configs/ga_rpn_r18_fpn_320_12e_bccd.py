# GA-RPN R-18-FPN at 320 px on BCCD, proposal-only: rpn_r18_fpn_320_12e_bccd.py with the RPN
# head replaced by GA-RPN (_base_/models/ga_rpn_r18_fpn_bccd_head.py); same budget.
_base_ = ['./rpn_r18_fpn_320_12e_bccd.py', '_base_/models/ga_rpn_r18_fpn_bccd_head.py']
model = dict(rpn_head={{_base_.ga_rpn_head}})
