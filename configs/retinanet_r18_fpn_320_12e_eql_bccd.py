# Long-tail variant of the 12-epoch BCCD budget (issue 13): EQL v1 (Tan et al. 2020) on the
# focal classifier: on foreground anchors the negative terms of tail classes are dropped.
# Tail = image frequency below lambda. The paper's lambda 0.00177 (LVIS, 1230 classes) marks
# no BCCD class as tail (image frequencies RBC 0.96, WBC 1.00, Platelets 0.57: the loss would
# be the baseline exactly), so lambda is 0.6 here: Platelets is the tail class. Image
# frequencies come from the dataset (ClassCountsHook). Everything else is the 12e baseline.
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='EqualizationLoss', lambda_=0.6, focal_gamma=2.0, focal_alpha=0.25,
    loss_weight=1.0)))
# the base's validation-loss hook, plus the hook that hands the dataset's class counts to the loss
custom_hooks = [
    {{_base_.val_loss_hook}},
    dict(type='ClassCountsHook'),
]
