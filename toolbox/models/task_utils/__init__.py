from .anchors import AnchorGenerator
from .assigners import AssignResult, MaxIoUAssigner
from .coders import DeltaXYWHBoxCoder
from .postprocess import nms_instances, select_topk_candidates

__all__ = ['AnchorGenerator', 'DeltaXYWHBoxCoder', 'MaxIoUAssigner', 'AssignResult',
           'nms_instances', 'select_topk_candidates']
