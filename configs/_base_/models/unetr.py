# UNETR (Hatamizadeh et al. 2022), the paper's BTCV model: ViT-B/16 encoder over 96^3 volumes
# (hidden 768, MLP 3072, 12 heads, 12 blocks, conv patch embedding), skips from blocks 4, 7, 10
# and the final normed block 12 (MONAI's and the released code's indexing; the paper's text says
# z3 / z6 / z9), decoder feature size 16 with instance norm and residual blocks, 14 BTCV
# classes. 92,784,046 parameters (MONAI's UNETR without its unused cross-attention norms).
img_size = (96, 96, 96)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='DataPreprocessor', pad_size_divisor=16),
    backbone=dict(type='ViT', in_channels=1, img_size=img_size, patch_size=16, hidden_size=768,
                  mlp_dim=3072, num_layers=12, num_heads=12, proj_type='conv',
                  dropout_rate=0.0, spatial_dims=3, out_indices=(4, 7, 10, 12)),
    decode_head=dict(type='UNETRHead', in_channels=768, num_classes=14, input_channels=1,
                     feature_size=16, norm_cfg=dict(type='IN'), res_block=True,
                     conv_block=True, spatial_dims=3, loss_decode=dict(type='DiceCELoss')),
    test_cfg=dict(mode='sliding_window', roi_size=img_size, sw_batch_size=4, overlap=0.5,
                  blend='gaussian'))
