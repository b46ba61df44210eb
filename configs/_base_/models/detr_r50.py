# DETR R-50 (Carion et al. 2020), the official recipe's model: ResNet-50 with frozen BN and
# frozen stem + layer1, 1x1 input projection to 256, sine positional encoding, 6 encoder and
# 6 decoder post-norm layers (8 heads, FFN 2048, dropout 0.1), 100 queries, class (C + 1) and
# 3-layer box heads with losses on every decoder layer. 41,302,368 trainable parameters at
# 91 classes (ANCHORS.md 3.3).
model = dict(
    type='SetPredictionDetector',
    data_preprocessor=dict(type='DataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=1),
    backbone=dict(type='ResNet', depth=50, out_indices=(3,), frozen_stages=1,
                  norm_cfg=dict(type='FrozenBN'), norm_eval=True, style='pytorch'),
    neck=dict(type='ChannelMapper', in_channels=[2048], out_channels=256, kernel_size=1,
              in_strides=(32,)),
    positional_encoding=dict(type='SinePositionalEncoding', num_feats=128, normalize=True),
    encoder=dict(type='DetrTransformerEncoder', num_layers=6, embed_dims=256, num_heads=8,
                 feedforward_channels=2048, dropout=0.1),
    decoder=dict(type='DetrTransformerDecoder', num_layers=6, embed_dims=256, num_heads=8,
                 feedforward_channels=2048, dropout=0.1),
    bbox_head=dict(
        type='DETRHead', num_classes=80, embed_dims=256, num_reg_layers=3, bg_cls_weight=0.1,
        loss_cls=dict(type='CrossEntropyLoss', loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0),
        assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='ClassificationCost', weight=1.0),
            dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=2.0)]),
        test_cfg=dict(max_per_img=100)),
    num_queries=100, embed_dims=256)
