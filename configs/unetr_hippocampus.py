# UNETR sized for two CPU cores on MSD Hippocampus (configs/_base_/datasets/hippocampus.py),
# trained from scratch. The paper's architecture with a narrower ViT (hidden 384, MLP 1536,
# 6 heads, 12 blocks; a 32 x 48 x 32 crop is only 2 x 3 x 2 tokens of 16^3, so the convolutional
# skips carry most of the detail), decoder feature size 16, instance norm, Dice + CE. AdamW 1e-3
# (warm-up, cosine), batch 4; whole-volume validation by gaussian-weighted sliding windows of the
# crop size (overlap 0.5; volumes smaller than a window are padded, as MONAI does).
# Measured (seed 0, 2 CPU cores, 0.7 s/iteration, 25 min undisturbed): val mean Dice 0.789
# (anterior 0.819, posterior 0.758); 0.768 at 1000 iterations. Below the 0.85 target.
# Before the heads took PyTorch's default conv init (the classifier was normal(0.01)), the same
# config reached 0.690 (0.292 at 1000): the foreground stayed unlearnt for hundreds of steps.
# UNETR's ViT sees a 32x48x32 crop as only 2x3x2 tokens of 16^3 here; a longer schedule (or a
# GPU) is the next step toward 0.85.
_base_ = ['_base_/models/unetr.py', '_base_/datasets/hippocampus.py',
          '_base_/default_runtime.py']
crop_size = {{_base_.crop_size}}
hidden = 384
model = dict(
    backbone=dict(img_size=crop_size, hidden_size=hidden, mlp_dim=4 * hidden, num_heads=6),
    decode_head=dict(in_channels=hidden, num_classes=3),
    test_cfg=dict(roi_size=crop_size))
max_iters = 2000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-5),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_iters - 50, eta_min=1e-5, by_epoch=False,
         begin=50, end=max_iters),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1000, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
