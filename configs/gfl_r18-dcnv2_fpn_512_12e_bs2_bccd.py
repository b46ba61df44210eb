# gfl_r18-dcnv2_fpn_512_12e_bccd.py at batch 2 instead of 8 (four times the optimiser steps,
# 1,248; the AdamW LR unchanged): the next point after gfl_r18-dcnv2_fpn_512_12e_bs4_bccd.py.
# Same seed and validation: an ablation row.
_base_ = ['./gfl_r18-dcnv2_fpn_512_12e_bccd.py']
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=2)
# Measured (seed 0, 2-core Xeon, 34 min, 1.4-2.5 s/iteration): val VOC mAP@0.5 0.8987 (RBC
# 0.843, WBC 0.989, Platelets 0.864), COCO box mAP 0.5847 (AP75 0.647): below batch 4 (0.9028 /
# 0.5980) and level with batch 8 (0.9029 / 0.5825): batch 4 is the better point.
