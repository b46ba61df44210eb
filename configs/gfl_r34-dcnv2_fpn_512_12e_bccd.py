# gfl_r18-dcnv2_fpn_512_12e_bccd.py with a ResNet-34 backbone (3-4-6-3 BasicBlocks instead of
# 2-2-2-2; the same stage widths, so the FPN and head are unchanged; DCNv2 in the last stage as
# before). Same seed, data and schedule: an ablation row on backbone depth.
_base_ = ['./gfl_r18-dcnv2_fpn_512_12e_bccd.py']
model = dict(backbone=dict(depth=34))
