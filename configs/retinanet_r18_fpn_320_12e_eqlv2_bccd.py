# Long-tail variant of the 12-epoch BCCD budget (issue 13): EQL v2 (Tan et al. 2021; gamma 12,
# mu 0.8, alpha 4) re-weights each class's positive / negative terms of the focal classifier
# from the accumulated gradient ratio (statistics kept in checkpoints). Background anchors are
# negatives of every class, as background RoIs are in the paper. Everything else is the 12e
# baseline.
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='EqualizationLossV2', num_classes=3, gamma=12.0, mu=0.8, alpha=4.0,
    focal_gamma=2.0, focal_alpha=0.25, loss_weight=1.0)))
