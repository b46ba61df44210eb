"""Test-time augmentation: run a detector or segmentor on several views of each image (scales,
flips) and merge the predictions into one per image.

The views come from mmcv's ``TestTimeAug`` transform in the test pipeline (each inner list of
its ``transforms`` is a set of alternatives, the views are their product); mmengine's
``BaseTTAModel.test_step`` runs the wrapped model once per view and hands the per-image lists of
view predictions to ``merge_preds``. Every view's prediction is already in the *original*
image's frame: detectors map boxes back with ``boxes_to_original`` (undo the view's flip in its
resized frame, ``x -> w - x``, then the resize) and the segmentor crops, unflips and resizes
its logits to ``ori_shape``. The merge therefore compares views as they come; flipping a view
here again would mirror it back out of place.

Used by ``tools/test.py --tta`` with a config's ``tta_model`` and ``tta_pipeline``; the
ground truth is loaded *after* the geometric alternatives (``LoadAnnotations`` as its own
``TestTimeAug`` step) so that it stays in the original frame for the metric::

    tta_model = dict(type='DetTTAModel', merge='wbf', iou_thr=0.55, max_per_img=100)
    tta_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='TestTimeAug', transforms=[
            [dict(type='Resize', scale=(320, 320)), dict(type='Resize', scale=(384, 384))],
            [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
            [dict(type='LoadAnnotations', with_bbox=True)],
            [dict(type='PackInputs')]])]
"""
from __future__ import annotations

import torch
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData
from torch import Tensor
from torchvision.ops import batched_nms

from toolbox.registry import MODELS
from toolbox.structures import box_iou

from .segmentors.encoder_decoder import keep_largest_component
from .task_utils import nms_instances

MERGE_METHODS = ('wbf', 'nms')


def _instances(bboxes: Tensor, scores: Tensor, labels: Tensor) -> InstanceData:
    return InstanceData(bboxes=bboxes, scores=scores, labels=labels)


def merge_nms(bboxes: Tensor, scores: Tensor, labels: Tensor, iou_thr: float = 0.5,
              max_per_img: int = 100) -> InstanceData:
    """Merge the views' detections of one image by class-aware NMS.

    Args:
        bboxes: (N, 4) ``xyxy`` boxes of all views, in the original image's pixels.
        scores: (N,) scores. labels: (N,) int64 class indices.
        iou_thr: a box is dropped when it overlaps a higher-scoring box of its class with
            IoU > ``iou_thr`` (``torchvision.ops.batched_nms``).
        max_per_img: keep the best ``max_per_img`` (all when <= 0).

    Returns:
        ``InstanceData`` with ``bboxes`` (K, 4), ``scores`` (K,), ``labels`` (K,), sorted by
        descending score; empty boxes (zero width or height) are dropped.
    """
    return nms_instances(bboxes.reshape(-1, 4), scores, labels, iou_thr, max_per_img)


def weighted_box_fusion(bboxes: Tensor, scores: Tensor, labels: Tensor, num_views: int,
                        iou_thr: float = 0.55, max_per_img: int = 100) -> InstanceData:
    """Weighted box fusion (Solovyev, Wang and Gabruseva, 2021) of the views' detections of
    one image.

    Clusters: the boxes that class-aware NMS at ``iou_thr`` keeps are the cluster seeds (the
    highest-scoring box of each group of overlapping same-class boxes); every box joins the
    best-scoring seed of its class that it overlaps with IoU > ``iou_thr`` (for a box NMS
    suppressed that is the seed that suppressed it, so every box is in exactly one cluster).
    Each cluster of ``n`` boxes with scores ``s_i`` becomes one box:

    * coordinates: the score-weighted mean ``sum(s_i * box_i) / sum(s_i)`` (the plain mean
      when every score is 0);
    * score: ``mean(s_i) * min(n, num_views) / num_views``, so that an object seen in one of
      two views keeps half its score;
    * label: the cluster's.

    Unlike the paper's sequential version, members are matched against the seed box rather
    than the running fused box; that keeps the whole computation vectorised (one IoU matrix,
    scatter sums).

    Args:
        bboxes: (N, 4) ``xyxy`` boxes of all views, in the original image's pixels.
        scores: (N,) scores in [0, 1]. labels: (N,) int64 class indices.
        num_views: number of views the boxes come from (>= 1).
        iou_thr: cluster threshold (0.55 in the paper).
        max_per_img: keep the best ``max_per_img`` fused boxes (all when <= 0).

    Returns:
        ``InstanceData`` with ``bboxes`` (K, 4) float, ``scores`` (K,), ``labels`` (K,) int64,
        sorted by descending fused score (K = 0 for no input boxes).
    """
    if num_views < 1:
        raise ValueError(f'weighted_box_fusion: num_views must be >= 1, got {num_views}')
    bboxes = bboxes.reshape(-1, 4)
    if bboxes.shape[0] == 0:
        return _instances(bboxes.new_zeros((0, 4)), scores.new_zeros((0,)),
                          labels.new_zeros((0,), dtype=torch.long))
    seeds = batched_nms(bboxes, scores, labels, iou_thr)  # sorted by descending score
    overlaps = box_iou(bboxes, bboxes[seeds])  # (N, S)
    same_class = labels[:, None] == labels[seeds][None, :]
    member = (overlaps > iou_thr) & same_class
    # a degenerate seed has IoU 0 with itself (zero union); it still heads its own cluster
    member[seeds, torch.arange(seeds.numel(), device=seeds.device)] = True
    # seeds are in descending score order, so the first True column is the best-scoring seed
    has_seed = member.any(dim=1)
    first_seed = member.int().argmax(dim=1)
    # NMS and box_iou may disagree in the last bit at IoU == thr: take the closest seed there
    closest_seed = torch.where(same_class, overlaps, overlaps.new_full((), -1.0)).argmax(dim=1)
    cluster = torch.where(has_seed, first_seed, closest_seed)

    num_clusters = seeds.numel()
    weights = scores.to(bboxes.dtype)
    score_sum = weights.new_zeros(num_clusters).index_add_(0, cluster, weights)
    weighted_sum = bboxes.new_zeros((num_clusters, 4)).index_add_(
        0, cluster, bboxes * weights[:, None])
    plain_sum = bboxes.new_zeros((num_clusters, 4)).index_add_(0, cluster, bboxes)
    counts = torch.bincount(cluster, minlength=num_clusters).to(bboxes.dtype)
    safe_sum = score_sum.clamp(min=torch.finfo(score_sum.dtype).tiny)
    fused_boxes = torch.where(score_sum[:, None] > 0, weighted_sum / safe_sum[:, None],
                              plain_sum / counts[:, None])
    fused_scores = score_sum / counts * counts.clamp(max=num_views) / num_views

    order = fused_scores.argsort(descending=True, stable=True)
    if max_per_img > 0:
        order = order[:max_per_img]
    return _instances(fused_boxes[order], fused_scores[order].to(scores.dtype),
                      labels[seeds][order])


def _reference_view(views):
    """The data sample that carries the merged prediction: the first unflipped view (its
    metainfo and ground truth describe the image as loaded), else the first view."""
    return next((v for v in views if not v.metainfo.get('flip', False)), views[0])


@MODELS.register_module()
class DetTTAModel(BaseTTAModel):
    """Test-time augmentation for detectors: merge the views' ``pred_instances`` per image.

    The wrapped detector's ``test_step`` runs once per view (``BaseTTAModel``); its
    ``pred_instances`` (``bboxes`` (N, 4) ``xyxy`` in the original image's pixels, ``scores``,
    ``labels``) are concatenated over the views and merged by :func:`weighted_box_fusion`
    (``merge='wbf'``) or :func:`merge_nms` (``merge='nms'``). The result is attached to the
    first unflipped view's data sample, so metrics and hooks read it as a plain prediction.

    Args:
        module: the detector (a config dict or a built model).
        merge: ``'wbf'`` or ``'nms'``.
        iou_thr: the cluster threshold of WBF or the NMS threshold.
        max_per_img: detections kept per image after merging (all when <= 0).
        data_preprocessor: replaces the detector's when given (mmengine's ``BaseTTAModel``).
    """

    def __init__(self, module, merge: str = 'wbf', iou_thr: float = 0.55,
                 max_per_img: int = 100, data_preprocessor=None):
        if merge not in MERGE_METHODS:
            raise ValueError(f'DetTTAModel: merge must be one of {MERGE_METHODS}, got '
                             f'{merge!r}')
        if not 0.0 <= iou_thr <= 1.0:
            raise ValueError(f'DetTTAModel: iou_thr must be in [0, 1], got {iou_thr!r}')
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        self.merge = merge
        self.iou_thr = iou_thr
        self.max_per_img = max_per_img

    def merge_preds(self, data_samples_list):
        """``data_samples_list[i][v]``: image i seen through view v -> one sample per image
        with the merged ``pred_instances``."""
        return [self._merge_views(views) for views in data_samples_list]

    def _merge_views(self, views):
        preds = [view.pred_instances for view in views]
        bboxes = torch.cat([p.bboxes.reshape(-1, 4) for p in preds])
        scores = torch.cat([p.scores for p in preds])
        labels = torch.cat([p.labels for p in preds])
        if self.merge == 'wbf':
            merged = weighted_box_fusion(bboxes, scores, labels, len(views), self.iou_thr,
                                         self.max_per_img)
        else:
            merged = merge_nms(bboxes, scores, labels, self.iou_thr, self.max_per_img)
        sample = _reference_view(views)
        sample.pred_instances = merged
        return sample


@MODELS.register_module()
class SegTTAModel(BaseTTAModel):
    """Test-time augmentation for segmentors: average the views' class probabilities.

    Each view's ``seg_logits`` (C, H, W) (or (C, D, H, W) for volumes) is already in the
    original frame (``EncoderDecoder.predict``); the merged prediction is
    ``p = mean over views of softmax(seg_logits)`` with ``pred_sem_seg = argmax_c p``
    (int64 (1, H, W)) and ``seg_logits = log p`` (so that its softmax gives back the averaged
    probabilities; a single view gives ``log_softmax`` of its logits). Both are attached to
    the first unflipped view's data sample in the segmentor's own form, so ``IoUMetric`` and
    the visualisation hooks read them unchanged. The segmentor's label clean-up
    (``test_cfg.keep_largest_component``) runs again on the merged labels: the views' own
    cleaned labels are discarded with them, and the merge must not bring the islands back.

    Args:
        module: the segmentor (a config dict or a built model).
        data_preprocessor: replaces the segmentor's when given (mmengine's ``BaseTTAModel``).
    """

    def merge_preds(self, data_samples_list):
        """``data_samples_list[i][v]``: image i seen through view v -> one sample per image
        with the averaged ``seg_logits`` and its ``pred_sem_seg``."""
        component = (getattr(self.module, 'test_cfg', None) or {}).get('keep_largest_component')
        merged = [self._merge_views(views) for views in data_samples_list]
        if component is not None:
            for sample in merged:
                sample.pred_sem_seg.data = keep_largest_component(sample.pred_sem_seg.data,
                                                                  **component)
        return merged

    @staticmethod
    def _merge_views(views):
        shapes = {tuple(view.seg_logits.data.shape) for view in views}
        if len(shapes) != 1:
            raise ValueError(f'SegTTAModel: the views of {views[0].metainfo.get("img_path")} '
                             f'have seg_logits of different shapes {sorted(shapes)}; every '
                             f'view must be predicted at the original size (ori_shape)')
        probs = torch.stack([view.seg_logits.data.float().softmax(dim=0)
                             for view in views]).mean(dim=0)
        sample = _reference_view(views)
        element = type(sample.seg_logits)
        sample.seg_logits = element(data=probs.clamp(min=torch.finfo(probs.dtype).tiny).log())
        sample.pred_sem_seg = element(data=probs.argmax(dim=0, keepdim=True))
        return sample
