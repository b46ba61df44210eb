# DETR-DC5 R-50, 500 epochs on COCO 2017 (official: 43.3 box AP): the last stage dilated
# (stride 16 instead of 32; torchvision's replace_stride_with_dilation=[False, False, True]).
_base_ = ['./detr_r50_8xb2-500e_coco.py']
model = dict(backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
             neck=dict(in_strides=(16,)))
