from mmengine.structures import InstanceData, PixelData

from .boxes import (FLIP_DIRECTIONS, box_areas, box_iou, boxes_to_original, clip_boxes,
                    flip_boxes, paired_box_iou, rescale_boxes, scale_boxes, translate_boxes,
                    voc_to_xyxy, xywh_to_xyxy, xyxy_to_xywh)
from .data_sample import IGNORE_INDEX, DataSample, VolumeData

__all__ = ['DataSample', 'InstanceData', 'PixelData', 'VolumeData', 'IGNORE_INDEX',
           'FLIP_DIRECTIONS', 'xywh_to_xyxy', 'xyxy_to_xywh', 'voc_to_xyxy', 'scale_boxes',
           'rescale_boxes', 'flip_boxes', 'clip_boxes', 'translate_boxes', 'box_areas',
           'box_iou', 'paired_box_iou', 'boxes_to_original']
