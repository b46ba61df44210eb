# Alias: RefineDet512 ResNet-101 on COCO, the paper's setting (see refinedet_r101_512_coco.py).
_base_ = ['refinedet_r101_512_coco.py']
