from .anchors import AnchorGenerator
from .assigners import (ApproxMaxIoUAssigner, AssignResult, BaseAssigner, HungarianAssigner,
                        MaxIoUAssigner)
from .coders import DeltaXYWHBoxCoder
from .match_costs import BaseMatchCost, BBoxL1Cost, ClassificationCost, FocalLossCost, IoUCost
from .postprocess import nms_instances, select_topk_candidates
from .samplers import BaseSampler, PseudoSampler, RandomSampler, SamplingResult

__all__ = ['AnchorGenerator', 'DeltaXYWHBoxCoder', 'MaxIoUAssigner', 'AssignResult',
           'nms_instances', 'select_topk_candidates', 'BaseAssigner', 'ApproxMaxIoUAssigner',
           'HungarianAssigner', 'BaseMatchCost', 'ClassificationCost', 'FocalLossCost',
           'BBoxL1Cost', 'IoUCost', 'BaseSampler', 'PseudoSampler', 'RandomSampler',
           'SamplingResult']
