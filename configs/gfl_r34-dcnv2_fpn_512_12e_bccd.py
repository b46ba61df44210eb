# gfl_r18-dcnv2_fpn_512_12e_bccd.py with a ResNet-34 backbone (3-4-6-3 BasicBlocks instead of
# 2-2-2-2; the same stage widths, so the FPN and head are unchanged; DCNv2 in the last stage as
# before). Same seed, data and schedule: an ablation row on backbone depth.
_base_ = ['./gfl_r18-dcnv2_fpn_512_12e_bccd.py']
model = dict(backbone=dict(depth=34))
# Measured (seed 0, 2-core Intel Xeon, 54 min, 9.8-12.5 s/iteration): val VOC mAP@0.5 0.9045
# (RBC 0.853, WBC 0.989, Platelets 0.872), COCO box mAP 0.5770 (AP75 0.637); the R18 model
# retrained on the same machine: 0.9029 / 0.5825. --tta 0.9084 / COCO 0.5901 (R18: 0.9050 /
# 0.5886); fused with the R18 model (both --tta) 0.9074 / COCO 0.5931. Depth does not pay at
# this data size and budget.
