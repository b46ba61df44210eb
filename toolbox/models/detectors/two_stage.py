"""Two-stage detector: backbone -> (neck) -> RPN (dense head) -> proposals -> RoI head."""
from __future__ import annotations

import torch

from toolbox.models.base import ToolboxModel
from toolbox.registry import MODELS

from .utils import attach_predictions, prefix_losses


@MODELS.register_module()
class TwoStageDetector(ToolboxModel):
    """``backbone`` -> optional ``neck`` -> ``rpn_head`` -> ``roi_head`` (Faster R-CNN family).

    * ``'loss'``: the RPN is trained as a class-agnostic dense head and proposes boxes from the
      same forward pass (``rpn_head.loss_and_predict(feats, samples, proposal_cfg)`` with
      ``train_cfg['rpn_proposal']``); its losses are renamed ``loss_rpn_*``. The RoI head then
      gets ``roi_head.loss(feats, proposals, data_samples)``.
    * ``'predict'``: ``proposals = rpn_head.predict(feats, samples)`` (the RPN's ``test_cfg``),
      ``roi_head.predict(feats, proposals, samples)``; boxes are mapped to the original image.
    * ``'tensor'``: ``(rpn_outs, roi_outs)``: the RPN's raw outputs and the RoI head's
      ``forward(feats, proposals)`` on the RPN's predictions.
    * Proposal-only mode (``roi_head=None``, an RPN evaluated on its own): ``'loss'`` gives the
      ``loss_rpn_*`` terms, ``'predict'`` the proposals (``bboxes``, ``scores``, ``labels`` 0)
      in the original image frame, for ``CocoMetric(metric='proposal')``; ``'tensor'`` the
      RPN's raw outputs.

    Proposals are one ``InstanceData`` per image with ``bboxes`` (P, 4) ``xyxy`` in the input
    frame and ``scores`` (P,), detached (no gradient flows from the RoI head into the RPN's
    box regression, as in Faster R-CNN's approximate joint training).

    Args:
        backbone, neck: as :class:`SingleStageDetector`.
        rpn_head: a dense head config; ``num_classes`` is forced to 1 (object vs background).
        roi_head: a ``BaseRoIHead`` config, or ``None`` for the proposal-only mode.
        train_cfg: ``dict(rpn_proposal=dict(nms_pre=2000, max_per_img=1000, iou_threshold=0.7,
            score_thr=0.0))``: the RPN's post-processing while training.
    """

    def __init__(self, backbone: dict, rpn_head: dict, roi_head: dict | None = None,
                 neck: dict | None = None,
                 train_cfg: dict | None = None, data_preprocessor: dict | None = None,
                 init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        rpn_head = dict(rpn_head)
        if rpn_head.get('num_classes', 1) != 1:
            raise ValueError(f"rpn_head must be class-agnostic (num_classes=1), got "
                             f"{rpn_head['num_classes']}")
        rpn_head['num_classes'] = 1
        self.rpn_head = MODELS.build(rpn_head)
        self.roi_head = MODELS.build(roi_head) if roi_head is not None else None
        self.train_cfg = dict(rpn_proposal=dict(nms_pre=2000, max_per_img=1000,
                                                iou_threshold=0.7, score_thr=0.0))
        self.train_cfg.update(train_cfg or {})

    def extract_feat(self, inputs: torch.Tensor):
        feats = self.backbone(inputs)
        return self.neck(feats) if self.neck is not None else feats

    @staticmethod
    def _class_agnostic(data_samples):
        """Copies of the samples whose gt labels are all 0 (the RPN's single class)."""
        out = []
        for sample in data_samples:
            sample = sample.clone()  # shallow: replace, never modify, its fields
            gt = sample.gt_instances.clone()
            gt.labels = torch.zeros_like(gt.labels)
            sample.gt_instances = gt
            out.append(sample)
        return out

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        feats = self.extract_feat(inputs)
        if self.roi_head is None:
            return self._forward_proposal_only(feats, data_samples, mode)
        if mode == 'loss':
            rpn_losses, proposals = self.rpn_head.loss_and_predict(
                feats, self._class_agnostic(data_samples), self.train_cfg['rpn_proposal'])
            losses = prefix_losses(rpn_losses, 'rpn')
            losses.update(self.roi_head.loss(feats, _detached(proposals), data_samples))
            return losses
        if mode == 'predict':
            proposals = self.rpn_head.predict(feats, data_samples)
            results = self.roi_head.predict(feats, proposals, data_samples)
            return attach_predictions(data_samples, results)
        if mode == 'tensor':
            rpn_outs = self.rpn_head(feats)
            metas = [s.metainfo for s in data_samples] if data_samples is not None else \
                [dict(img_shape=tuple(inputs.shape[-2:]))] * inputs.shape[0]
            proposals = self.rpn_head.predict_by_feat(*rpn_outs, batch_img_metas=metas)
            return rpn_outs, self.roi_head(feats, proposals)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def _forward_proposal_only(self, feats, data_samples, mode: str):
        if mode == 'loss':
            return prefix_losses(self.rpn_head.loss(feats, self._class_agnostic(data_samples)),
                                 'rpn')
        if mode == 'predict':
            return attach_predictions(data_samples, self.rpn_head.predict(feats, data_samples))
        if mode == 'tensor':
            return self.rpn_head(feats)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")


def _detached(proposals):
    for p in proposals:
        p.bboxes = p.bboxes.detach()
        if 'scores' in p:
            p.scores = p.scores.detach()
    return proposals
