"""Single-stage detector: backbone -> (neck) -> dense head, trained end to end."""
from __future__ import annotations

import torch

from toolbox.models.base import ToolboxModel
from toolbox.registry import MODELS

from .utils import attach_predictions


@MODELS.register_module()
class SingleStageDetector(ToolboxModel):
    """``backbone`` -> optional ``neck`` -> ``bbox_head`` (a ``BaseDenseHead``).

    ``forward(inputs (B, 3, H, W), data_samples, mode)``:
      * ``'loss'``: dict of losses from ``bbox_head.loss(feats, data_samples)``;
      * ``'predict'``: the data samples with ``pred_instances`` (``bboxes`` ``xyxy`` in the
        original image's pixels, ``scores``, ``labels``);
      * ``'tensor'``: the head's raw outputs.

    ``feats`` is the neck's output, or the backbone's without a neck. A head whose class sets
    ``uses_backbone_feats = True`` receives ``(backbone_feats, neck_feats)``: a neck that
    transforms the pyramid (RefineDet's TCB, ASFF) stays a neck, and the head still reads the
    backbone maps it needs.
    """

    def __init__(self, backbone: dict, bbox_head: dict, neck: dict | None = None,
                 data_preprocessor: dict | None = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.bbox_head = MODELS.build(bbox_head)

    def extract_feat(self, inputs: torch.Tensor):
        """Backbone (and neck) maps, in the form the head takes (see the class docstring)."""
        backbone_feats = self.backbone(inputs)
        feats = self.neck(backbone_feats) if self.neck is not None else backbone_feats
        if getattr(self.bbox_head, 'uses_backbone_feats', False):
            return backbone_feats, feats
        return feats

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        feats = self.extract_feat(inputs)
        if mode == 'loss':
            return self.bbox_head.loss(feats, data_samples)
        if mode == 'predict':
            return attach_predictions(data_samples, self.bbox_head.predict(feats, data_samples))
        if mode == 'tensor':
            return self.bbox_head(feats)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")
