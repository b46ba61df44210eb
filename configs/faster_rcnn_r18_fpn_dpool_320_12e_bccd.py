# Faster R-CNN R-18-FPN at 320 px on BCCD with deformable RoI pooling (Dai et al. 2017) in place
# of RoIAlign; otherwise faster_rcnn_r18_fpn_320_12e_bccd.py (same data, schedule, seed). One
# change: offset_fc (7x7x128 -> 1024 -> 1024 -> 98, last layer zero, so training starts from
# RoIAlign) shifts each of the 49 bins by 0.1 x its offset x the RoI size; 2x2 samples per bin
# (mmcv's default; the base recipe's adaptive count is not available here).
_base_ = ['./faster_rcnn_r18_fpn_320_12e_bccd.py']
model = dict(
    roi_head=dict(
        roi_extractor=dict(_delete_=True, type='MultiLevelDeformRoIPool', output_size=7,
                           featmap_strides=[4, 8, 16, 32], in_channels=128, sampling_ratio=2,
                           gamma=0.1)))
