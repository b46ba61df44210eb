"""Single-stage detector: backbone -> (neck) -> dense head, trained end to end."""
from __future__ import annotations

import torch
from toolbox.models.base import ToolboxModel

from toolbox.registry import MODELS


def rescale_to_original(results, data_samples):
    """Map predicted ``xyxy`` boxes from the (resized, maybe flipped) input frame back to the
    original image: undo the flip, divide by ``scale_factor``, clip to ``ori_shape``."""
    for instances, sample in zip(results, data_samples):
        boxes = instances.bboxes
        if sample.metainfo.get('flip', False):
            h, w = sample.img_shape
            boxes = boxes.clone()
            if sample.flip_direction == 'horizontal':
                boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
            else:
                boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
        w_scale, h_scale = sample.metainfo.get('scale_factor', (1.0, 1.0))
        boxes = boxes / boxes.new_tensor([w_scale, h_scale, w_scale, h_scale])
        ori_h, ori_w = sample.ori_shape
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ori_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ori_h)
        instances.bboxes = boxes
    return results


@MODELS.register_module()
class SingleStageDetector(ToolboxModel):
    """``backbone`` -> optional ``neck`` -> ``bbox_head``.

    ``forward(inputs (B, 3, H, W), data_samples, mode)``:
      * ``'loss'``: dict of losses from ``bbox_head.loss(feats, data_samples)``;
      * ``'predict'``: the data samples with ``pred_instances`` (boxes in the original image
        frame, see :func:`rescale_to_original`);
      * ``'tensor'``: the head's raw outputs.
    """

    def __init__(self, backbone: dict, bbox_head: dict, neck: dict | None = None,
                 data_preprocessor: dict | None = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.bbox_head = MODELS.build(bbox_head)

    def extract_feat(self, inputs: torch.Tensor):
        feats = self.backbone(inputs)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        feats = self.extract_feat(inputs)
        if mode == 'loss':
            return self.bbox_head.loss(feats, data_samples)
        if mode == 'predict':
            results = self.bbox_head.predict(feats, data_samples)
            results = rescale_to_original(results, data_samples)
            for sample, instances in zip(data_samples, results):
                sample.pred_instances = instances
            return data_samples
        if mode == 'tensor':
            return self.bbox_head(feats)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")
