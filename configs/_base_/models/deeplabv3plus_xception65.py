# DeepLab v3+ with the aligned Xception-65 encoder (Chen et al. 2018), output stride 16:
# separable ASPP with rates 6/12/18, decoder on Xception feature point 1 (256 channels, stride 4;
# TF DeepLab's entry_flow/block2 separable_conv2), 48-channel projection, two separable 3x3 convs
# of 256. Xception's TF weights expect inputs scaled to [-1, 1] (mean = std = 127.5).
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='DataPreprocessor', mean=[127.5, 127.5, 127.5],
                           std=[127.5, 127.5, 127.5], bgr_to_rgb=True, pad_value=0),
    backbone=dict(type='AlignedXception', depth=65, output_stride=16, out_indices=(1, 4),
                  norm_cfg=dict(type='BN', eps=1e-3, requires_grad=True)),
    decode_head=dict(type='DepthwiseSeparableASPPHead', in_channels=2048, in_index=1,
                     c1_in_channels=256, c1_in_index=0, c1_channels=48, channels=256,
                     dilations=(6, 12, 18), separable=True, dropout_ratio=0.1, num_classes=21,
                     norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    test_cfg=dict(mode='whole'))
