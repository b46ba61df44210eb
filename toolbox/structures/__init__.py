from mmengine.structures import InstanceData, PixelData

from .boxes import flip_boxes, scale_boxes, voc_to_xyxy, xywh_to_xyxy, xyxy_to_xywh
from .data_sample import DataSample

__all__ = ['DataSample', 'InstanceData', 'PixelData', 'xywh_to_xyxy', 'xyxy_to_xywh',
           'voc_to_xyxy', 'scale_boxes', 'flip_boxes']
