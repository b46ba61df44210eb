# RetinaNet with SpineNet-49S (filter scale 0.65, 128 endpoint channels) at 640 px on COCO 2017:
# the SpineNet-49 recipe (retinanet_spinenet-49_640_coco.py) with the 49S backbone and a
# 128-channel head (tensorflow/tpu configs/spinenet, MODEL_ZOO). Published: 39.5 AP (ReLU,
# 350 epochs), 41.5 (swish + stochastic depth, 500 epochs); 11.9M parameters published, 11.27M
# computed for the TF head with 91 classes (ours with 80: 11.15M; the gap is discussed in
# tests/test_spinenet.py). reference/ANCHORS.md 1.3.
_base_ = ['./retinanet_spinenet-49_640_coco.py']
model = dict(
    backbone=dict(arch='49S'),
    bbox_head=dict(in_channels=128, feat_channels=128))
