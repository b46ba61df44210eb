# ASFF after the FPN on BCCD: retinanet_r18_fpn_320_12e_bccd.py (12-epoch budget, seed 0) with
# ASFF fusing P3..P5 of the FPN (128 channels each, 16-channel weight convs, BN + LeakyReLU 0.1
# as in YOLOv3-ASFF). The baseline's head reads four levels (anchor strides 8..64); P6 (the
# FPN's extra stride-2 conv on C5) passes through ASFF unchanged, so the head, its anchors and
# the schedule stay the baseline's and the one change is the fusion of the three main levels.
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
model = dict(
    neck=dict(
        _delete_=True, type='ASFF', in_channels=[128, 128, 128, 128], out_channels=128,
        inter_channels=128, start_level=0, in_strides=(8, 16, 32, 64),
        pre_neck=dict(type='FPN', in_channels=[128, 256, 512], out_channels=128,
                      start_level=0, add_extra_convs='on_input', num_outs=4,
                      in_strides=(8, 16, 32))))
