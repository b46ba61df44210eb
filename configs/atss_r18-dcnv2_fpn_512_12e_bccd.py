# atss_r18_fpn_512_12e_bccd.py with modulated deformable convolution (DCNv2, one offset group,
# zero-initialised offsets and masks) as the second 3x3 conv of every BasicBlock of the last
# stage only (PP-YOLO's choice): stages 2-4, which gave the 320 px RetinaNet +0.011
# (retinanet_r18-dcnv2_fpn_320_12e_bccd.py), cost 19.5 s / iteration at 512 px on 2 CPU cores
# (100 min), 5x the plain model. Same seed, data and schedule: an ablation row.
_base_ = ['./atss_r18_fpn_512_12e_bccd.py']
model = dict(backbone=dict(dcn=dict(type='DCNv2', deform_groups=1),
                           stage_with_dcn=(False, False, False, True)))
# Measured (seed 0, 2 CPU cores, 36 min, 6.1-7.4 s/iteration): val VOC mAP@0.5 0.9022 (RBC
# 0.849, WBC 0.991, Platelets 0.866), COCO box mAP 0.5827 (AP75 0.663) against 0.8961 / 0.5770
# without DCN: the best single view on both. --tta: 0.9047 / COCO 0.5918 (AP75 0.662).
