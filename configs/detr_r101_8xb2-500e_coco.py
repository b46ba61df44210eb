# DETR R-101, 500 epochs on COCO 2017 (official: 43.5 box AP). 60,242,272 trainable parameters.
_base_ = ['./detr_r50_8xb2-500e_coco.py']
model = dict(backbone=dict(depth=101, pretrained='torchvision://resnet101'))
