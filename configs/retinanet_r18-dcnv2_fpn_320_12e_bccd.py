# Deformable convolution in the backbone on BCCD: retinanet_r18_fpn_320_12e_bccd.py (12-epoch
# budget, seed 0) with the second 3x3 conv of every BasicBlock of stages 2-4 made a modulated
# deformable conv (DCNv2, one offset group; offsets and mask zero-initialised, so training starts
# from the plain network with that conv's output halved). The one change against the baseline.
# Measured (seed 0, 2 CPU cores, 38 min): val VOC mAP@0.5 0.894 (RBC 0.834, WBC 0.998, Platelets
# 0.849) against the baseline's 0.883; ~6 s/iteration (torchvision's CPU deform_conv2d).
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(backbone=dict(dcn=dict(type='DCNv2', deform_groups=1),
                           stage_with_dcn=(False, True, True, True)))
