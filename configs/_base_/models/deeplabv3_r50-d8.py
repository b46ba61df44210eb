# DeepLab v3 (Chen et al. 2017) on a dilated ResNet-50, output stride 8: ASPP rates 12/24/36,
# image pooling, 256 channels, 1x1 projection, 1x1 classifier (the paper's head: num_convs=0;
# torchvision's DeepLabHead is num_convs=1). FCN auxiliary head on C4, weight 0.4.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='DataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_value=0),
    backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), strides=(1, 2, 1, 1),
                  dilations=(1, 1, 2, 4), norm_cfg=norm_cfg, style='pytorch'),
    decode_head=dict(type='ASPPHead', in_channels=2048, in_index=3, channels=256,
                     dilations=(12, 24, 36), num_convs=0, dropout_ratio=0.1, num_classes=21,
                     norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    auxiliary_head=dict(type='FCNHead', in_channels=1024, in_index=2, channels=256, num_convs=1,
                        dropout_ratio=0.1, num_classes=21, norm_cfg=norm_cfg,
                        align_corners=False,
                        loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
    test_cfg=dict(mode='whole'))
