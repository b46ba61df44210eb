# gfl_r18-dcnv2_fpn_512_12e_bccd.py trained twice as long (24 epochs; the same warm-up and a
# cosine schedule stretched to 24 epochs), as atss_r18_fpn_512_24e_bccd.py does for the full
# ATSS recipe, whose 24-epoch model gained the most from --tta. Same seed and data: a schedule
# ablation.
_base_ = ['./gfl_r18-dcnv2_fpn_512_12e_bccd.py']
train_cfg = dict(max_epochs=24, val_interval=6)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=24, eta_min=1e-5, by_epoch=True, begin=0, end=24),
]
default_hooks = dict(checkpoint=dict(interval=24, max_keep_ckpts=1))
