"""Base of the RoI heads of two-stage detectors, and multi-level RoI feature extraction."""
from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torchvision.ops import roi_align

from toolbox.models.utils import unpack_gt_instances
from toolbox.registry import MODELS, TASK_UTILS

from .init import apply_init_cfg


def proposals_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """Per-image boxes [(P_i, 4)] -> (sum P_i, 5) RoIs ``[image_index, x1, y1, x2, y2]`` (the
    format of ``torchvision.ops.roi_align``)."""
    if not boxes:
        raise ValueError('proposals_to_rois needs at least one image')
    index = torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device)
                       for i, b in enumerate(boxes)])
    return torch.cat([index, torch.cat(list(boxes))], dim=1)


@MODELS.register_module()
class MultiLevelRoIAlign(nn.Module):
    """RoIAlign of each RoI on the pyramid level that suits its size (FPN, Lin et al. 2017).

    A box of scale ``s = sqrt(w * h)`` goes to level ``floor(log2(s / finest_scale + 1e-6))``
    clamped to the available levels: with ``finest_scale=56`` boxes under 112 px read the
    finest map (P2), 112-224 P3, 224-448 P4, larger P5 (eq. 1 of the FPN paper, k0 = 4 at
    224 px). Each level is one ``torchvision.ops.roi_align`` call over all its RoIs.

    Args:
        output_size: (h, w) of the pooled features (7 for box heads, 14 for mask heads).
        featmap_strides: stride of each input level, finest first.
        sampling_ratio: sampling points per bin (0 = adaptive, as mmdet).
        aligned: half-pixel alignment (Detectron2 / mmdet ``aligned=True``).
        finest_scale: see above.

    ``forward(feats, rois)``: feats a sequence of (B, C, H_l, W_l), rois (K, 5) -> (K, C,
    *output_size).
    """

    def __init__(self, output_size: int | tuple[int, int] = 7,
                 featmap_strides: Sequence[int] = (4, 8, 16, 32), sampling_ratio: int = 0,
                 aligned: bool = True, finest_scale: float = 56.0):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) \
            else tuple(output_size)
        self.featmap_strides = tuple(featmap_strides)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.finest_scale = finest_scale

    def map_levels(self, rois: Tensor) -> Tensor:
        """(K,) level index of each RoI (see the class docstring)."""
        scale = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=0).sqrt()
        level = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return level.clamp(0, len(self.featmap_strides) - 1).long()

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        feats = feats[:len(self.featmap_strides)]
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], *self.output_size))
        if rois.shape[0] == 0:
            return out
        levels = self.map_levels(rois)
        for level, (feat, stride) in enumerate(zip(feats, self.featmap_strides)):
            index = (levels == level).nonzero(as_tuple=True)[0]
            if index.numel():
                out[index] = roi_align(feat, rois[index], self.output_size, 1.0 / stride,
                                       self.sampling_ratio, self.aligned)
        return out


class BaseRoIHead(BaseModule, metaclass=abc.ABCMeta):
    """Second stage of a two-stage detector: classify and refine proposals.

    Contract (what :class:`~toolbox.models.detectors.TwoStageDetector` calls):

    * ``loss(feats, proposals, data_samples) -> dict``: ``proposals`` is one ``InstanceData``
      per image (``bboxes`` (P, 4) ``xyxy`` input frame, detached); the head samples them
      against the ground truth (:meth:`sample_proposals`) and returns its losses.
    * ``predict(feats, proposals, data_samples) -> list[InstanceData]``: ``bboxes``,
      ``scores``, ``labels`` per image in the input frame.
    * ``forward(feats, proposals)``: the raw outputs (``'tensor'`` mode).

    Args:
        num_classes: object classes C.
        roi_extractor: RoI feature extractor config (``MultiLevelRoIAlign``).
        assigner, sampler: task-util configs for proposals (Faster R-CNN: ``MaxIoUAssigner``
            0.5 / 0.5 and ``RandomSampler(512, 0.25)`` adding the gt boxes as proposals).
        test_cfg: post-processing settings, merged over ``default_test_cfg``.
    """

    default_test_cfg: dict = {}

    def __init__(self, num_classes: int, roi_extractor: dict,
                 assigner: dict | None = None, sampler: dict | None = None,
                 test_cfg: dict | None = None, init_cfg: dict | list | None = None):
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.roi_extractor = MODELS.build(roi_extractor)
        self.assigner = TASK_UTILS.build(assigner) if assigner is not None else None
        self.sampler = TASK_UTILS.build(sampler) if sampler is not None else None
        self.test_cfg = dict(self.default_test_cfg)
        self.test_cfg.update(test_cfg or {})

    def init_weights(self) -> None:
        """Apply ``init_cfg`` only (see :mod:`toolbox.models.bases.init`)."""
        apply_init_cfg(self)

    @abc.abstractmethod
    def forward(self, feats, proposals: list[InstanceData]):
        """Raw outputs for the proposals."""

    @abc.abstractmethod
    def loss(self, feats, proposals: list[InstanceData], data_samples) -> dict[str, Tensor]:
        """Losses of the sampled proposals."""

    @abc.abstractmethod
    def predict(self, feats, proposals: list[InstanceData], data_samples
                ) -> list[InstanceData]:
        """Detections per image, input frame."""

    def sample_proposals(self, proposals: list[InstanceData], data_samples) -> list:
        """Assign and sample each image's proposals; returns one ``SamplingResult`` per image
        (``pos_inds``/``neg_inds`` index ``priors``, the proposals with any gt prepended)."""
        gts, ignores, metas = unpack_gt_instances(data_samples)
        results = []
        for proposal, gt, ignore, meta in zip(proposals, gts, ignores, metas):
            pred = InstanceData(priors=proposal.bboxes)
            assigned = self.assigner.assign(pred, gt, ignore, meta)
            results.append(self.sampler.sample(assigned, pred, gt))
        return results

    def extract_roi_feats(self, feats, boxes: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``(rois (K, 5), features (K, C, h, w))`` of per-image boxes."""
        rois = proposals_to_rois(boxes)
        return rois, self.roi_extractor(feats, rois)

