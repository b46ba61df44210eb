from .anchors import AnchorGenerator
from .assigners import (ApproxMaxIoUAssigner, AssignResult, ATSSAssigner, BaseAssigner,
                        HungarianAssigner, MaxIoUAssigner)
from .coders import DeltaXYWHBoxCoder, DistancePointBBoxCoder
from .match_costs import BaseMatchCost, BBoxL1Cost, ClassificationCost, FocalLossCost, IoUCost
from .postprocess import (centers_inside, clip_to_image_shapes, detections_from_levels,
                          nms_instances, nonempty_boxes, proposals_from_levels,
                          select_topk_candidates, topk_per_image)
from .samplers import BaseSampler, PseudoSampler, RandomSampler, SamplingResult

__all__ = ['AnchorGenerator', 'DeltaXYWHBoxCoder', 'DistancePointBBoxCoder',
           'MaxIoUAssigner', 'AssignResult',
           'nms_instances', 'nonempty_boxes', 'centers_inside', 'select_topk_candidates',
           'BaseAssigner', 'ApproxMaxIoUAssigner', 'ATSSAssigner',
           'HungarianAssigner', 'BaseMatchCost', 'ClassificationCost', 'FocalLossCost',
           'BBoxL1Cost', 'IoUCost', 'BaseSampler', 'PseudoSampler', 'RandomSampler',
           'SamplingResult', 'clip_to_image_shapes', 'proposals_from_levels', 'topk_per_image',
           'detections_from_levels']
