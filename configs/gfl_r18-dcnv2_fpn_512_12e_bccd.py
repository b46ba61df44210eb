# gfl_r18_fpn_512_12e_bccd.py with DCNv2 as the second 3x3 conv of every BasicBlock of the last
# ResNet stage (the placement of atss_r18-dcnv2_fpn_512_12e_bccd.py). Same seed, data and
# schedule: an ablation row.
_base_ = ['./gfl_r18_fpn_512_12e_bccd.py']
model = dict(backbone=dict(dcn=dict(type='DCNv2', deform_groups=1),
                           stage_with_dcn=(False, False, False, True)))
# Measured (seed 0, 2 CPU cores, 31 min, 5.1-8.6 s/iteration): val VOC mAP@0.5 0.9078 (RBC
# 0.854, WBC 0.989, Platelets 0.880), COCO box mAP 0.5853 (AP75 0.637): the best single view
# on both (full ATSS + DCN: 0.9022 / 0.5827; GFL without DCN: 0.8916 / 0.5834). --tta: 0.9069
# / COCO 0.5960 (AP75 0.667). Fused with the full-ATSS
# checkpoint's --tta predictions (tools/analysis/fuse_results.py): 0.9075 / COCO 0.6020.
# With the 24-epoch ATSS model's (atss_r18_fpn_512_24e_bccd.py): 0.9079 / COCO 0.6067.
