# RetinaNet VoVNetV2-39-FPN at 320 px on BCCD (3 blood-cell classes), trained from scratch (no
# pretrained weights are available offline). Same data, schedule and head as
# retinanet_r18_fpn_320_bccd.py (inherited), so the two compare backbones: V-39 itself at full
# width (23.5M backbone parameters; eSE on the last OSA module of each stage and identity
# mappings, as timm's ese_vovnet39b, whose ImageNet weights load through `pretrained=`). V2 rather
# than v1 because the identity mappings help a 39-layer network train from scratch; the BN
# statistics train (norm_eval=False) since nothing is pretrained. FPN takes C3..C5 (512, 768, 1024
# ch).
_base_ = ['./retinanet_r18_fpn_320_bccd.py']
model = dict(
    backbone=dict(_delete_=True, type='VoVNet', arch='V-39', version=2, ese_blocks='last',
                  out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False),
    neck=dict(in_channels=[512, 768, 1024]))
