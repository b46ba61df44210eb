"""Base of every dense detection head (anchor- or point-based, one prediction per prior)."""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from toolbox.models.utils import mean_over_processes, to_float32, unpack_gt_instances
from toolbox.registry import MODELS, TASK_UTILS

from .init import apply_init_cfg


@dataclass
class DenseTargets:
    """Training targets of a batch of B images over N priors.

    Attributes:
        labels: (B, N) int64: the class of the matched gt for positives, ``background_label``
            elsewhere (negatives and ignored priors).
        label_weights: (B, N) float: 1 for sampled positives and negatives, 0 for ignored or
            unsampled priors.
        bbox_targets: (B, N, 4): encoded deltas (or the gt boxes themselves with
            ``reg_decoded_bbox``) for positives, 0 elsewhere.
        pos_mask, neg_mask: (B, N) bool, the sampled positives and negatives.
        avg_factor: number of positives of the batch averaged over DDP processes, at least 1:
            the usual normaliser of dense losses.
    """
    labels: Tensor
    label_weights: Tensor
    bbox_targets: Tensor
    pos_mask: Tensor
    neg_mask: Tensor
    avg_factor: float


class BaseDenseHead(BaseModule, metaclass=abc.ABCMeta):
    """Dense head contract and the logic every dense head shares.

    Flow (what the detectors call):

    * ``loss(x, data_samples)`` = ``loss_by_feat(*self(x), batch_gt_instances, batch_img_metas,
      batch_gt_instances_ignore)`` -> dict of losses (keys starting with ``loss_`` are summed and
      optimised).
    * ``predict(x, data_samples)`` = ``predict_by_feat(*self(x), batch_img_metas=...)`` -> one
      ``InstanceData(bboxes (K, 4), scores (K,), labels (K,))`` per image, boxes ``xyxy`` in the
      *input* frame (resized, padded network input), clipped to ``img_shape``. Mapping back to
      the original image is the detector's job.
    * ``loss_and_predict(x, data_samples, proposal_cfg)``: both from one forward pass (the RPN of
      a two-stage detector: losses and proposals).

    ``x`` is the neck's tuple of maps (finest first); a head whose class sets
    ``uses_backbone_feats = True`` receives the pair ``(backbone_feats, neck_feats)`` instead
    (RefineDet: the ARM reads the backbone, the ODM reads the TCB neck).

    Shared pieces: :meth:`flatten_levels` (per-level maps -> one (B, N, K) tensor in prior
    order), :meth:`grid_priors` (cached per feature size), :meth:`get_targets` (assigner +
    sampler + box coder per image, vectorised over priors), :meth:`loss_on_positives` (keeps
    the graph connected on a batch without positives) and :meth:`avg_factor` (DDP-averaged).

    Args:
        num_classes: object classes C (no background entry).
        prior_generator: prior (anchor) generator config, or ``None`` for heads without priors.
        bbox_coder: box coder config (``DeltaXYWHBoxCoder``), or ``None``.
        assigner: assigner config (``MaxIoUAssigner``, ``ApproxMaxIoUAssigner``, ...), or None.
        sampler: sampler config; ``PseudoSampler`` (every positive and negative) by default.
        loss_cls, loss_bbox: loss configs (``(pred, target, weight=None, avg_factor=None)``).
        reg_decoded_bbox: regress decoded boxes (IoU-type losses) instead of deltas.
        test_cfg: post-processing settings, merged over ``default_test_cfg``.
        init_cfg: mmengine ``init_cfg`` applied by ``init_weights()`` (layers are initialised
            at construction, in ``reset_parameters``).
    """

    uses_backbone_feats: bool = False
    default_test_cfg: dict = {}

    def __init__(self, num_classes: int, prior_generator: dict | None = None,
                 bbox_coder: dict | None = None, assigner: dict | None = None,
                 sampler: dict | None = dict(type='PseudoSampler'),
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 reg_decoded_bbox: bool = False, test_cfg: dict | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(init_cfg=init_cfg)
        if num_classes < 1:
            raise ValueError(f'{type(self).__name__}: num_classes must be >= 1, got {num_classes}')
        self.num_classes = num_classes
        self.prior_generator = _build_or_none(prior_generator, TASK_UTILS)
        self.bbox_coder = _build_or_none(bbox_coder, TASK_UTILS)
        self.assigner = _build_or_none(assigner, TASK_UTILS)
        self.sampler = _build_or_none(sampler, TASK_UTILS)
        self.loss_cls = _build_or_none(loss_cls, MODELS)
        self.loss_bbox = _build_or_none(loss_bbox, MODELS)
        self.reg_decoded_bbox = reg_decoded_bbox
        self.test_cfg = dict(self.default_test_cfg)
        self.test_cfg.update(test_cfg or {})
        self._prior_cache: tuple | None = None

    def init_weights(self) -> None:
        """Apply ``init_cfg`` only (see :mod:`toolbox.models.bases.init`)."""
        apply_init_cfg(self)

    # ------------------------------------------------------------------ contract
    @abc.abstractmethod
    def forward(self, x) -> tuple:
        """Feature maps -> a tuple of per-level output lists."""

    @abc.abstractmethod
    def loss_by_feat(self, *outs_and_targets) -> dict[str, Tensor]:
        """``(*self(x), batch_gt_instances, batch_img_metas, batch_gt_instances_ignore)``."""

    @abc.abstractmethod
    def predict_by_feat(self, *outs, batch_img_metas: list[dict],
                        cfg: dict | None = None) -> list[InstanceData]:
        """Head outputs -> one ``InstanceData`` per image (input frame); ``cfg`` overrides
        ``test_cfg`` (a two-stage detector passes its proposal settings)."""

    def loss(self, x, data_samples) -> dict[str, Tensor]:
        gts, ignores, metas = unpack_gt_instances(data_samples)
        return self.loss_by_feat(*to_float32(self(x)), gts, metas, ignores)

    @torch.no_grad()
    def predict(self, x, data_samples) -> list[InstanceData]:
        metas = [s.metainfo for s in data_samples]
        return self.predict_by_feat(*to_float32(self(x)), batch_img_metas=metas)

    def loss_and_predict(self, x, data_samples, proposal_cfg: dict | None = None
                         ) -> tuple[dict[str, Tensor], list[InstanceData]]:
        """Losses and predictions (with ``proposal_cfg`` over ``test_cfg``) from one forward."""
        outs = to_float32(self(x))
        gts, ignores, metas = unpack_gt_instances(data_samples)
        losses = self.loss_by_feat(*outs, gts, metas, ignores)
        detached = tuple([o.detach() for o in level_list] for level_list in outs)
        with torch.no_grad():
            predictions = self.predict_by_feat(*detached, batch_img_metas=metas,
                                               cfg=proposal_cfg)
        return losses, predictions

    # ---------------------------------------------------------- shared pieces
    @staticmethod
    def flatten_levels(maps, channels: int) -> Tensor:
        """List of (B, A * K, H_l, W_l) -> (B, sum_l H_l W_l A, K).

        Row ``(y * W + x) * A + a`` of a level is prior ``a`` of cell ``(y, x)``: the order of
        :class:`~toolbox.models.task_utils.AnchorGenerator`.
        """
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, channels)
                          for m in maps], dim=1)

    def grid_priors(self, maps) -> Tensor:
        """(N, 4) priors of every level for maps (or features) of these sizes, cached.

        The cache holds the last feature sizes and device: a fixed input size (the common case)
        builds the anchors once.
        """
        key = (tuple(tuple(m.shape[-2:]) for m in maps), maps[0].device)
        if self._prior_cache is None or self._prior_cache[0] != key:
            per_level = self.prior_generator.grid_anchors(list(key[0]), device=key[1])
            self._prior_cache = (key, torch.cat(per_level), [len(p) for p in per_level])
        return self._prior_cache[1]

    def grid_priors_per_level(self, maps) -> list[Tensor]:
        """The priors of :meth:`grid_priors` (same cache) as one (H_l * W_l * A_l, 4) view per
        level, for the predict paths that select per level."""
        return list(self.grid_priors(maps).split(self._prior_cache[2]))

    def num_priors_per_level(self, maps) -> list[int]:
        self.grid_priors(maps)
        return list(self._prior_cache[2])

    def avg_factor(self, num_pos, device) -> float:
        """Positives averaged over DDP processes, at least 1 (every process divides alike)."""
        return max(mean_over_processes(float(num_pos), device), 1.0)

    def get_targets(self, priors: Tensor, batch_gt_instances, batch_img_metas,
                    batch_gt_instances_ignore=None, background_label: int | None = None,
                    class_agnostic: bool = False, encode: bool = True,
                    num_level_priors: list[int] | None = None) -> DenseTargets:
        """Assign and sample every image, then encode box targets.

        Args:
            priors: (N, 4) priors shared by the batch, or (B, N, 4) per image (e.g. RefineDet's
                refined anchors). ``xyxy``, input frame.
            batch_gt_instances: per image ``bboxes`` (G, 4) and ``labels`` (G,).
            batch_img_metas: per image metainfo.
            batch_gt_instances_ignore: per image ignored boxes (``bboxes``) or ``None``.
            background_label: label of negatives; ``num_classes`` by default.
            class_agnostic: every object gets label 0 (objectness, RPN / RefineDet's ARM).
            encode: encode box targets with ``bbox_coder`` (ignored with
                ``reg_decoded_bbox``, which targets the gt boxes).
            num_level_priors: priors per pyramid level, in the order of ``priors``; when given
                the assigner also gets ``level_ids`` (N,) (what ``ATSSAssigner`` needs).
        """
        background = self.num_classes if background_label is None else background_label
        num_images = len(batch_gt_instances)
        ignores = batch_gt_instances_ignore or [None] * num_images
        labels, label_weights, targets, pos_masks, neg_masks = [], [], [], [], []
        level_ids = None if num_level_priors is None else torch.repeat_interleave(
            torch.arange(len(num_level_priors), device=priors.device),
            torch.as_tensor(num_level_priors, device=priors.device))
        for i in range(num_images):
            image_priors = priors[i] if priors.dim() == 3 else priors
            gt = batch_gt_instances[i]
            if class_agnostic:
                gt = InstanceData(bboxes=gt.bboxes, labels=torch.zeros_like(gt.labels))
            pred = InstanceData(priors=image_priors)
            if level_ids is not None:
                pred.level_ids = level_ids
            assigned = self.assigner.assign(pred, gt, ignores[i], batch_img_metas[i])
            sampled = self.sampler.sample(assigned, pred, gt)
            n = image_priors.shape[0]
            image_labels = image_priors.new_full((n,), background, dtype=torch.long)
            image_labels[sampled.pos_inds] = sampled.pos_gt_labels
            weights = image_priors.new_zeros(n)
            weights[sampled.pos_inds] = 1.0
            weights[sampled.neg_inds] = 1.0
            image_targets = image_priors.new_zeros((n, 4))
            if sampled.num_pos > 0:
                image_targets[sampled.pos_inds] = sampled.pos_gt_bboxes \
                    if self.reg_decoded_bbox or not encode else \
                    self.bbox_coder.encode(sampled.pos_priors, sampled.pos_gt_bboxes)
            pos = torch.zeros(n, dtype=torch.bool, device=image_priors.device)
            neg = torch.zeros_like(pos)
            pos[sampled.pos_inds] = True
            neg[sampled.neg_inds] = True
            labels.append(image_labels)
            label_weights.append(weights)
            targets.append(image_targets)
            pos_masks.append(pos)
            neg_masks.append(neg)
        pos_mask = torch.stack(pos_masks)
        return DenseTargets(torch.stack(labels), torch.stack(label_weights),
                            torch.stack(targets), pos_mask, torch.stack(neg_masks),
                            self.avg_factor(pos_mask.sum().item(), priors.device))

    @staticmethod
    def loss_on_positives(loss_fn, pred: Tensor, target: Tensor, avg_factor: float,
                          all_preds: Tensor) -> Tensor:
        """``loss_fn(pred, target, avg_factor=...)`` on the positives, or a zero that stays
        connected to ``all_preds`` when there are none (so DDP sees every parameter used)."""
        if pred.numel() == 0:
            return all_preds.sum() * 0
        return loss_fn(pred, target, avg_factor=avg_factor)


def _build_or_none(cfg, registry):
    return None if cfg is None else registry.build(cfg)
