# FCN-8s (Long et al. 2015) on VGG-16 ImageNet weights, Pascal VOC 2012 trainaug, 512x512 crops,
# evaluated on val single scale (the paper-sized recipe; not run on this machine).
# The backbone is the SSD / RefineDet VGG-16 (plugins/backbones/vgg.py), which cannot return the
# paper's pool3 / pool4 / pool5 taps: its out_indices 0, 1, 2 are conv4_3 (stride 8, 512
# channels: pool3 followed by the conv4 block), conv5_3 (stride 16, 512: pool4 followed by the
# conv5 block) and fc7 (stride 32), and its fc6 / fc7 are SSD's reduced ones (3x3 dilation 3,
# 1024 channels, decimated from torchvision's classifier) instead of the paper's 7x7 / 1x1 of
# 4096. So this is FCN-8s with the paper's head (score layers, bilinear-initialised learned 2x
# up-scores, zero-initialised skip scores) on taps one conv block deeper, and num_convs=0 since
# fc6 / fc7 are in the backbone (the paper's drop-out after fc6 is missing; the one before the
# classifier is the paper's after fc7). L2Norm (an SSD addition) is off. The paper's model
# (134.4M learned parameters, tests/test_fcn_unet.py) needs a VGG that returns pool3 / pool4.
# The backbone's conv6 extras (1.4M parameters) are built but unused: DDP must look for unused
# parameters. SGD with the paper's momentum 0.9, weight decay 5e-4 and doubled bias learning
# rate; 1e-3 (DeepLab-LargeFOV's for VGG-16 with a pixel-averaged loss: the paper's 1e-4 was for
# a summed one) with poly decay over 30k iterations of batch 16.
_base_ = ['_base_/datasets/voc12aug.py', '_base_/schedules/schedule_poly_30k.py',
          '_base_/default_runtime.py']
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='DataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_value=0),
    backbone=dict(type='VGG', out_indices=(0, 1, 2), l2_norm_scales=None,
                  pretrained='torchvision://vgg16'),
    decode_head=dict(type='FCNSkipHead', variant='8s', in_channels=(512, 512, 1024),
                     in_index=(0, 1, 2), num_convs=0, channels=1024, dropout_ratio=0.5,
                     num_classes=21, norm_cfg=None, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(optimizer=dict(lr=1e-3, momentum=0.9, weight_decay=5e-4),
                     paramwise_cfg=dict(bias_lr_mult=2.0))
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
default_hooks = dict(logger=dict(interval=50, log_metric_by_epoch=False),
                     checkpoint=dict(by_epoch=False, interval=3000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
