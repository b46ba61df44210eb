"""The modules that are exported: the data preprocessor's image steps, the network and the
test-time post-processing of a detector or a segmentor, as one ``forward(images)``.

Input of every exported graph: ``images`` float (B, C, H, W), pixel values as the config's
test pipeline produces them (0..255, in the channel order the pipeline loads: BGR from
OpenCV), at the export size (H, W). The graph does what the data preprocessor does to them
(BGR->RGB when ``bgr_to_rgb``, ``(x - mean) / std``, end-padding with ``pad_value`` to a
multiple of ``pad_size_divisor``), so a user feeds resized images and nothing else.

Supported kinds (:func:`build_export_module`):

* ``SingleStageDetector`` whose dense head has a registered post-processor (RetinaNet and
  RetinaSepBN heads, RefineDet; :mod:`toolbox.export.postprocess`). Outputs ``boxes``
  (B, max_det, 4) ``xyxy`` in the input frame (the (H, W) image, clipped to it), ``scores``
  (B, max_det), ``labels`` (B, max_det) int64 (-1 in the padding), ``num_dets`` (B,) int64:
  image ``b``'s detections are the first ``num_dets[b]`` rows, by decreasing score;
  ``max_det`` is the head's ``test_cfg.max_per_img``. The whole (H, W) input counts as the
  image (anchors centred anywhere in it predict); letterboxing an image of another aspect
  ratio, and mapping boxes back to it, is the caller's.
* 2D ``EncoderDecoder`` segmentors with ``test_cfg.mode='whole'``: ``seg_logits``
  (B, num_classes, H, W) and ``seg_map`` (B, H, W) int64, their argmax, at the input size.

Not supported (:class:`UnsupportedModelError`): two-stage detectors (RoI heads), DETR-type
set-prediction detectors, dense heads without a post-processor (Guided Anchoring, RPN),
3D (volume) segmentors and sliding-window test modes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.models.bases import resize
from toolbox.models.detectors import SetPredictionDetector, SingleStageDetector, TwoStageDetector
from toolbox.models.segmentors import EncoderDecoder

from .postprocess import EXPORT_POSTPROCESSORS, padded_nms, predict_by_feat_name

SUPPORTED_KINDS = ('SingleStageDetector with a RetinaHead / RetinaSepBNHead / RefineDetHead '
                   '(or another head with a registered export post-processor)',
                   "2D EncoderDecoder segmentor with test_cfg.mode='whole'")
DETECTION_OUTPUTS = ('boxes', 'scores', 'labels', 'num_dets')
SEGMENTATION_OUTPUTS = ('seg_logits', 'seg_map')


class UnsupportedModelError(TypeError):
    """The model is of a kind that cannot be exported (see ``SUPPORTED_KINDS``)."""


def _unsupported(model, why: str) -> UnsupportedModelError:
    kinds = '; '.join(SUPPORTED_KINDS)
    return UnsupportedModelError(f'cannot export {type(model).__name__}: {why}. Supported: '
                                 f'{kinds}.')


class ExportPreprocess(nn.Module):
    """The image steps of the model's ``DataPreprocessor`` for a batch tensor.

    ``forward(images (B, C, H, W))`` -> (B, C, H_pad, W_pad) float: channels reversed when
    ``bgr_to_rgb``, normalised, end-padded with ``pad_value`` to multiples of
    ``pad_size_divisor`` (the same order of steps as mmengine's ``ImgDataPreprocessor``).
    """

    def __init__(self, data_preprocessor, img_hw: tuple[int, int]):
        super().__init__()
        self.bgr_to_rgb = bool(getattr(data_preprocessor, '_channel_conversion', False))
        self.normalize = bool(getattr(data_preprocessor, '_enable_normalize', False))
        if self.normalize:
            self.register_buffer('mean', data_preprocessor.mean.detach().clone().float(),
                                 persistent=False)
            self.register_buffer('std', data_preprocessor.std.detach().clone().float(),
                                 persistent=False)
        divisor = int(getattr(data_preprocessor, 'pad_size_divisor', 1))
        self.pad_value = float(getattr(data_preprocessor, 'pad_value', 0))
        h, w = img_hw
        self.padding = (0, math.ceil(w / divisor) * divisor - w,
                        0, math.ceil(h / divisor) * divisor - h)
        self.padded_hw = (h + self.padding[3], w + self.padding[1])

    @property
    def in_channels(self) -> int:
        return self.mean.shape[0] if self.normalize else 3

    def forward(self, images: Tensor) -> Tensor:
        if self.bgr_to_rgb:
            images = images.flip(1)
        images = images.float()
        if self.normalize:
            images = (images - self.mean) / self.std
        if any(self.padding):
            images = F.pad(images, self.padding, value=self.pad_value)
        return images


class DetectorExport(nn.Module):
    """Preprocess -> backbone (-> neck) -> dense head -> post-processing -> padded NMS, for a
    ``SingleStageDetector`` at a fixed image size ``img_hw``; outputs
    :data:`DETECTION_OUTPUTS` (see the module docstring)."""

    output_names = DETECTION_OUTPUTS

    def __init__(self, model: SingleStageDetector, img_hw: tuple[int, int]):
        super().__init__()
        self.preprocess = ExportPreprocess(model.data_preprocessor, img_hw)
        self.model = model
        head = model.bbox_head
        postprocess = EXPORT_POSTPROCESSORS.get(predict_by_feat_name(head))
        if postprocess is None:
            raise _unsupported(model, f'its head {type(head).__name__} has no export '
                                      f'post-processor (its test-time logic is '
                                      f'{predict_by_feat_name(head)})')
        with torch.no_grad():
            probe = torch.zeros(1, self.preprocess.in_channels, *self.preprocess.padded_hw,
                                device=next(model.parameters()).device)
            head_outs = head(model.extract_feat(probe))
        self.postprocess = postprocess(head, head_outs, img_hw)

    def forward(self, images: Tensor):
        head_outs = self.model.bbox_head(self.model.extract_feat(self.preprocess(images)))
        boxes, scores, labels, valid = self.postprocess(*head_outs)
        post = self.postprocess
        return padded_nms(boxes, scores, labels, valid, post.iou_threshold, post.max_det,
                          post.num_classes)


class SegmentorExport(nn.Module):
    """Preprocess -> backbone (-> neck) -> decode head -> logits resized bilinearly to the
    padded input and cropped to the image (what ``EncoderDecoder.predict`` does with
    ``test_cfg.mode='whole'``), and their argmax; outputs :data:`SEGMENTATION_OUTPUTS`.

    The resize size is the export size as a constant: the segmentor's own ``encode_decode``
    passes the traced input shape through a data sample's metainfo, which the tracer loses
    (onnxruntime then reads a zero output size)."""

    output_names = SEGMENTATION_OUTPUTS

    def __init__(self, model: EncoderDecoder, img_hw: tuple[int, int]):
        super().__init__()
        mode = model.test_cfg.get('mode', 'whole')
        if mode != 'whole':
            raise _unsupported(model, f"its test_cfg.mode is {mode!r}; export runs the network "
                                      f"on the whole image: export at the window size with "
                                      f"--cfg-options model.test_cfg.mode=whole")
        self.preprocess = ExportPreprocess(model.data_preprocessor, img_hw)
        self.model = model
        self.img_hw = tuple(img_hw)

    def forward(self, images: Tensor):
        inputs = self.preprocess(images)
        head = self.model.decode_head
        head_inputs = dict(inputs=inputs) if head.reads_inputs else {}
        logits = head(self.model.extract_feat(inputs), **head_inputs)
        logits = resize(logits, self.preprocess.padded_hw, self.model.align_corners)
        logits = logits[..., :self.img_hw[0], :self.img_hw[1]]
        return logits, logits.argmax(1)


def build_export_module(model, img_hw: tuple[int, int]) -> nn.Module:
    """The exportable module for ``model`` (in eval mode) at image size ``img_hw = (H, W)``;
    raises :class:`UnsupportedModelError` for other kinds (see the module docstring)."""
    if isinstance(model, SingleStageDetector):
        return DetectorExport(model, img_hw)
    if isinstance(model, EncoderDecoder):
        if getattr(model.decode_head, 'spatial_dims', 2) != 2:
            raise _unsupported(model, 'it segments 3D volumes (B, C, D, H, W); export takes '
                                      '2D images')
        return SegmentorExport(model, img_hw)
    if isinstance(model, TwoStageDetector):
        raise _unsupported(model, 'two-stage detectors (RPN proposals + RoI head) are not '
                                  'exported')
    if isinstance(model, SetPredictionDetector):
        raise _unsupported(model, 'set-prediction (DETR) detectors are not exported')
    raise _unsupported(model, 'it is neither a single-stage detector nor an encoder-decoder '
                              'segmentor')
