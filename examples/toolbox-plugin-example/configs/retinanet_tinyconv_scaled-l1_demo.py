# The demo RetinaNet (configs/retinanet_r18_fpn_160_demo.py) with this package's components:
# the TinyConvBackbone (strides 2 and 4) and the ScaledL1Loss on the box deltas. The FPN reads
# the stride-4 map and adds two levels (strides 4, 8, 16), so the anchors use those strides.
# From the toolbox checkout: python tools/train.py \
#     examples/toolbox-plugin-example/configs/retinanet_tinyconv_scaled-l1_demo.py
_base_ = ['../../../configs/retinanet_r18_fpn_160_demo.py']
model = dict(
    backbone=dict(_delete_=True, type='TinyConvBackbone', out_indices=(0, 1)),
    neck=dict(in_channels=[16, 32], out_channels=32, start_level=1, add_extra_convs='on_output',
              num_outs=3, in_strides=(2, 4)),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1, reg_decoded_bbox=False,
                   anchor_generator=dict(octave_base_scale=4, scales_per_octave=1,
                                         ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16]),
                   loss_bbox=dict(_delete_=True, type='ScaledL1Loss', loss_weight=1.0)))
