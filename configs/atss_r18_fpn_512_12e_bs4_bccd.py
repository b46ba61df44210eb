# atss_r18_fpn_512_12e_bccd.py at batch 4 instead of 8 (twice the optimiser steps, the AdamW LR
# unchanged), as gfl_r18-dcnv2_fpn_512_12e_bs4_bccd.py does for GFL + DCN. Same seed and
# validation: an ablation row.
_base_ = ['./atss_r18_fpn_512_12e_bccd.py']
train_dataloader = dict(batch_size=4)
auto_scale_lr = dict(enable=False, base_batch_size=4)
# Measured (seed 0, 2-core Xeon, 22 min, 1.7-2.9 s/iteration): val VOC mAP@0.5 0.8892 (RBC
# 0.835, WBC 0.989, Platelets 0.843), COCO box mAP 0.5835 (AP75 0.630), against 0.8961 / 0.5770
# for batch 8 (run on the AMD EPYC; the cross-CPU spread is ~0.005): better boxes, fewer at
# IoU 0.5. --tta: 0.8977 / COCO 0.5993 (AP75 0.681). Fused with the batch-4 GFL + DCN model's
# --tta predictions (tools/analysis/fuse_results.py): 0.9042 / COCO 0.6091 (AP75 0.687).
