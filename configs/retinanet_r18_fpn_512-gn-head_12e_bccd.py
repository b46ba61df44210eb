# retinanet_r18_fpn_512_12e_bccd.py with group norm (32 groups) after every conv of the class
# and box subnets, the from-scratch practice of "Rethinking ImageNet Pre-training" (He et al.
# 2019: norm in every layer) and of FCOS / ATSS heads. The head is shared across the 4 pyramid
# levels, so batch statistics would mix levels; GN normalises each level's map on its own and
# does not depend on the batch of 8. Same seed, data and schedule: an ablation row.
_base_ = ['./retinanet_r18_fpn_512_12e_bccd.py']
model = dict(bbox_head=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))
# Measured (seed 0, 2 CPU cores, 22 min, 4.2 s/iteration): val VOC mAP@0.5 0.8739 (RBC 0.794,
# WBC 0.996, Platelets 0.831), COCO box mAP 0.5213, against 0.8952 / 0.5447 without GN: the
# training loss ends lower (0.40 vs 0.45) but validation is worse, RBC most. Not a default.
