# An attention block in the backbone on BCCD: retinanet_r18_fpn_320_12e_bccd.py (12-epoch budget,
# seed 0) with a squeeze-and-excitation block (reduction 16) after the last conv of every
# BasicBlock (before the residual add, as in SE-ResNet), in all four stages. The one change
# against the baseline.
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(backbone=dict(plugins=[dict(cfg=dict(type='SE', ratio=1 / 16),
                                         stages=(True, True, True, True),
                                         position='after_conv2')]))
