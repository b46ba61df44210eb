# RetinaNet with Chollet's Xception (timm legacy_xception layout) and FPN at 320 px on BCCD
# (3 blood-cell classes), trained from scratch: the R-18 BCCD recipe with the backbone swapped.
# FPN takes Xception feature points 2-4 (ReLU(entry block 2) 256 ch at stride 8, ReLU(middle
# block 8) 728 ch at 16, exit flow 2048 ch at 32), 'same' stem padding so maps are H / stride.
_base_ = ['./retinanet_r18_fpn_320_bccd.py']
model = dict(
    backbone=dict(_delete_=True, type='Xception', out_indices=(2, 3, 4), frozen_stages=-1,
                  norm_eval=False, stem_padding='same'),
    neck=dict(in_channels=[256, 728, 2048], out_channels=128, start_level=0,
              add_extra_convs='on_input', num_outs=4, in_strides=(8, 16, 32)))
