# An attention block in the backbone on BCCD: retinanet_r18_fpn_320_12e_bccd.py (12-epoch budget,
# seed 0) with a squeeze-and-excitation block (reduction 16) after the last conv of every
# BasicBlock (before the residual add, as in SE-ResNet), in all four stages. The one change
# against the baseline.
# Measured (seed 0, 2 CPU cores, 8 min): val VOC mAP@0.5 0.884 (RBC 0.838, WBC 0.995, Platelets
# 0.820) against the baseline's 0.883 (within run-to-run noise).
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(backbone=dict(plugins=[dict(cfg=dict(type='SE', ratio=1 / 16),
                                         stages=(True, True, True, True),
                                         position='after_conv2')]))
