# UNETR sized for two CPU cores on MSD Hippocampus (configs/_base_/datasets/hippocampus.py),
# trained from scratch. The paper's architecture with a narrower ViT (hidden 384, MLP 1536,
# 6 heads, 12 blocks; a 32 x 48 x 32 crop is only 2 x 3 x 2 tokens of 16^3, so the convolutional
# skips carry most of the detail), decoder feature size 16, instance norm, Dice + CE. AdamW 1e-3
# (warm-up, cosine), batch 4; whole-volume validation by gaussian-weighted sliding windows of the
# crop size (overlap 0.5; volumes smaller than a window are padded, as MONAI does).
# Measured (seed 0, 2 CPU cores, 0.7-0.8 s/iteration, 76 min): val mean Dice 0.830 (anterior
# 0.836, posterior 0.824) with the largest part of each label kept; 0.805 without (anterior
# 0.825, posterior 0.785; 0.829 keeping the largest part of the union of the two labels);
# without it, at 1000-5000 iterations 0.745 / 0.778 / 0.803 / 0.793 / 0.805, so the model has
# plateaued. The same config cut to 2000 iterations reached 0.789 (unprocessed). Below the
# issue's 0.85 target, which the 3D U-Net (unet_hippocampus.py) passes on the same data and
# loss in 2000 iterations (0.877): UNETR's ViT sees a 32x48x32 crop as only 2x3x2 tokens of
# 16^3, and its skips are token maps upsampled 2-8x, so at this volume size it is a shallow
# CNN with a global context. 8^3 patches (unetr_hippocampus_patch8.py) reach 0.863.
# Before the heads took PyTorch's default conv init (the classifier was normal(0.01)), the
# 2000-iteration schedule reached 0.690 (0.292 at 1000): the foreground stayed unlearnt for
# hundreds of steps.
_base_ = ['_base_/models/unetr.py', '_base_/datasets/hippocampus.py',
          '_base_/default_runtime.py']
crop_size = {{_base_.crop_size}}
hidden = 384
model = dict(
    backbone=dict(img_size=crop_size, hidden_size=hidden, mlp_dim=4 * hidden, num_heads=6),
    decode_head=dict(in_channels=hidden, num_classes=3),
    # stray islands of a label become background (MONAI / nnU-Net clean-up), tuned on val
    test_cfg=dict(roi_size=crop_size,
                  keep_largest_component=dict(applied_labels=(1, 2), independent=True)))
max_iters = 6000
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
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1000, max_keep_ckpts=1,
                                     save_best='mDice', rule='greater'))
log_processor = dict(by_epoch=False)
