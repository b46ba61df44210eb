# unetr_hippocampus.py with ViT patches of 8^3 instead of 16^3: a 32 x 48 x 32 crop becomes
# 4 x 6 x 4 = 96 tokens instead of 2 x 3 x 2 = 12, and the decoder has three CNN levels instead
# of four (UNETRHead(patch_size=8): skips from blocks 4 and 8, decoder from the normed block 12;
# module docstring of plugins/decode_heads/unetr_head.py). Everything else (data, crop, loss,
# optimiser, 6000-iteration schedule, clean-up) is the 16^3 recipe's.
_base_ = ['unetr_hippocampus.py']
model = dict(
    data_preprocessor=dict(pad_size_divisor=8),
    backbone=dict(patch_size=8, out_indices=(4, 8, 12)),
    decode_head=dict(patch_size=8))
# 4000 iterations (not 6000): about 1.1 s/iteration on the 2 cores against 0.8 for 16^3 patches
max_iters = 4000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_iters - 50, eta_min=1e-5, by_epoch=False,
         begin=50, end=max_iters),
]
