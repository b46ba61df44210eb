# ATSS (Zhang et al. CVPR 2020) in full: retinanet_r18_fpn_512-atss_12e_bccd.py (ATSS
# assignment, one square anchor per location) with the paper's head: a centre-ness branch on
# the box subnet (BCE; box loss weighted by the centre-ness targets; test score = class
# probability x centre-ness) and a learnable scale per level. No GN in the subnets (GN hurt
# the 512 px RetinaNet, 0.8739 vs 0.8952). Same seed, data and schedule: an ablation row.
_base_ = ['./retinanet_r18_fpn_512-atss_12e_bccd.py']
model = dict(bbox_head=dict(type='ATSSHead'))
# Measured (seed 0, 2 CPU cores, 20 min, 3.8-4.2 s/iteration): val VOC mAP@0.5 0.8961 (RBC
# 0.845, WBC 0.990, Platelets 0.853), COCO box mAP 0.5770 (AP75 0.642) against 0.8988 / 0.5713
# (AP75 0.596) without the branch: better-ranked boxes at the strict IoUs. --tta (the base's
# 480 / 512 / 544 px x flip views): 0.9008 / COCO 0.5951 (AP75 0.677), our best COCO mAP.
