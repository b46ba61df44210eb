# DeepLab v3+ with a dilated ResNet-101 (output stride 8, ASPP rates 12/24/36) on Pascal VOC 2012
# trainaug, evaluated on val single scale (VainF: 78.3 at OS16; jfzhang95: 78.43; reference/
# ANCHORS.md 3.4). Separable ASPP and decoder on C2, FCN auxiliary head on C4 (0.4), 512x512
# crops, batch 16, poly lr 0.007, 30k iterations. The backbone starts from torchvision's
# ImageNet ResNet-101; offline, give a local path or model.backbone.pretrained=None.
_base_ = ['_base_/models/deeplabv3plus_r50-d8.py', '_base_/datasets/voc12aug.py',
          '_base_/schedules/schedule_poly_30k.py', '_base_/default_runtime.py']
model = dict(backbone=dict(depth=101, pretrained='torchvision://resnet101'))
default_hooks = dict(logger=dict(interval=50, log_metric_by_epoch=False),
                     checkpoint=dict(by_epoch=False, interval=3000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
