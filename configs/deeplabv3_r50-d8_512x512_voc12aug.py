# DeepLab v3 with a dilated ResNet-50 (output stride 8, ASPP rates 12/24/36, image pooling) on
# Pascal VOC 2012 trainaug, evaluated on val single scale. FCN auxiliary head on C4 (0.4),
# 512x512 crops, batch 16, poly lr 0.007, 30k iterations. The backbone starts from torchvision's
# ImageNet ResNet-50; offline, give a local path or model.backbone.pretrained=None.
_base_ = ['_base_/models/deeplabv3_r50-d8.py', '_base_/datasets/voc12aug.py',
          '_base_/schedules/schedule_poly_30k.py', '_base_/default_runtime.py']
model = dict(backbone=dict(pretrained='torchvision://resnet50'))
default_hooks = dict(logger=dict(interval=50, log_metric_by_epoch=False),
                     checkpoint=dict(by_epoch=False, interval=3000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
