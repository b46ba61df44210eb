"""Encoder-decoder segmentor: backbone -> (neck) -> decode head (+ auxiliary heads in training),
for images (B, C, H, W) and volumes (B, C, D, H, W), with whole, sliding-window and
MONAI-style Gaussian-blended sliding-window inference."""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from torch import Tensor, nn

from toolbox.models.base import ToolboxModel
from toolbox.registry import MODELS
from toolbox.structures import DataSample, VolumeData

TEST_MODES = ('whole', 'slide', 'sliding_window')
BLENDS = ('constant', 'gaussian')
PADDING_MODES = ('constant', 'reflect', 'replicate', 'circular')
#: defaults of ``test_cfg=dict(mode='sliding_window', ...)`` (those of MONAI's
#: ``sliding_window_inference``)
SLIDING_WINDOW_DEFAULTS = dict(sw_batch_size=4, overlap=0.25, blend='constant',
                               sigma_scale=0.125, padding_mode='constant', cval=0.0)


def _build(cfg):
    return cfg if isinstance(cfg, nn.Module) else MODELS.build(cfg)


def _per_axis(value, ndim: int, name: str) -> tuple:
    """A number or a sequence of ``ndim`` numbers -> a tuple of ``ndim`` numbers."""
    if isinstance(value, (int, float)):
        return (value,) * ndim
    value = tuple(value)
    if len(value) != ndim:
        raise ValueError(f'test_cfg.{name} must be a number or {ndim} numbers (one per spatial '
                         f'axis), got {value!r}')
    return value


def _positive_ints(value, name: str, mode: str) -> None:
    if value is None or not isinstance(value, Sequence) or len(value) not in (2, 3) or \
            not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"test_cfg mode={mode!r} needs {name}=(h, w) or (d, h, w) of positive "
                         f"ints, got {value!r}")


def keep_largest_component(pred: Tensor, applied_labels: Sequence[int],
                           independent: bool = True) -> Tensor:
    """Keep only the largest connected part of the given labels of a label map, setting the
    rest to 0 (background); MONAI's ``KeepLargestConnectedComponent`` with full connectivity
    (8 neighbours in 2D, 26 in 3D), computed by ``scipy.ndimage.label``.

    Args:
        pred: int label map (1, *spatial) (a ``pred_sem_seg``), any device.
        applied_labels: the labels to clean.
        independent: each label on its own (True), or the union of ``applied_labels`` as one
            object, whose largest part keeps all its labels (False: e.g. the two halves of one
            organ).

    Returns:
        the cleaned map, same shape, dtype and device.
    """
    from scipy import ndimage  # MONAI's transform is a test-only reference (needs scikit-image)
    labels = pred.cpu().numpy().copy()
    spatial = labels[0]  # a view: writes land in ``labels``
    structure = ndimage.generate_binary_structure(spatial.ndim, spatial.ndim)
    groups = [[c] for c in applied_labels] if independent else [list(applied_labels)]
    for group in groups:
        mask = np.isin(spatial, group)
        parts, count = ndimage.label(mask, structure)
        if count > 1:
            sizes = np.bincount(parts.ravel())
            sizes[0] = 0
            spatial[mask & (parts != sizes.argmax())] = 0
    return torch.from_numpy(labels).to(pred.device)


def importance_map(roi_size: Sequence[int], blend: str = 'constant',
                   sigma_scale: float | Sequence[float] = 0.125,
                   device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Weight of each position of a window, shape ``roi_size`` (MONAI's
    ``compute_importance_map``).

    ``'constant'``: ones. ``'gaussian'``: the product over axes of
    ``exp(-x^2 / (2 sigma^2))`` with ``x`` the offset from the window centre and
    ``sigma = sigma_scale * roi_size`` per axis, clamped below at ``max(min, 1e-3)`` so that no
    position has (almost) zero weight. Computed in float32, returned in ``dtype``.
    """
    roi_size = tuple(int(r) for r in roi_size)
    if blend == 'constant':
        weights = torch.ones(roi_size, device=device, dtype=torch.float32)
    elif blend == 'gaussian':
        sigmas = [r * s for r, s in zip(roi_size, _per_axis(sigma_scale, len(roi_size),
                                                             'sigma_scale'))]
        weights = None
        for axis, (size, sigma) in enumerate(zip(roi_size, sigmas)):
            x = torch.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=torch.float32,
                             device=device)
            x = torch.exp(x ** 2 / (-2 * sigma ** 2))  # 1D gaussian along this axis
            weights = x if axis == 0 else weights.unsqueeze(-1) * x[(None,) * axis]
    else:
        raise ValueError(f'blend must be one of {BLENDS}, got {blend!r}')
    weights = weights.clamp(min=max(weights.min().item(), 1e-3))
    return weights.to(dtype)


def window_starts(image_size: Sequence[int], roi_size: Sequence[int],
                  overlap: Sequence[float]) -> np.ndarray:
    """Start corners (num_windows, ndim) of the sliding windows that cover ``image_size``
    (MONAI's ``dense_patch_slices`` with its scan interval), each axis ``>= roi_size``.

    Along an axis of size ``S`` with window ``r``: interval ``i = max(int(r * (1 - overlap)), 1)``
    (``r`` when ``S == r``), starts ``0, i, 2i, ...`` up to the first that reaches the end
    (``ceil((S - r) / i) + 1`` windows), the last shifted back to ``S - r``. Windows are
    ordered like ``np.meshgrid(..., indexing='ij')``: the last axis varies fastest.
    """
    starts = []
    for size, roi, ovl in zip(image_size, roi_size, overlap):
        interval = roi if roi == size else max(int(roi * (1 - ovl)), 1)
        count = -(-(size - roi) // interval) + 1
        starts.append(np.minimum(np.arange(count) * interval, size - roi))
    grids = np.meshgrid(*starts, indexing='ij')
    return np.stack([g.reshape(-1) for g in grids], axis=1)


@MODELS.register_module()
class EncoderDecoder(ToolboxModel):
    """``backbone`` -> optional ``neck`` -> ``decode_head``; ``auxiliary_head`` adds losses.

    Images and volumes share every code path: ``inputs`` is (B, C, H, W) for images or
    (B, C, D, H, W) for volumes (the head's ``spatial_dims``); "spatial" below means (H, W) or
    (D, H, W), and a volume's axes are the NIfTI array axes (i, j, k).

    ``forward(inputs, data_samples, mode)``:

    * ``'loss'``: ``decode_head.loss`` (keys such as ``loss_ce``, ``acc_seg``) plus each
      auxiliary head's, renamed ``loss_aux_ce`` / ``aux_acc_seg`` (``loss_aux{k}_*`` for the
      k-th of several auxiliary heads);
    * ``'predict'``: the data samples with ``seg_logits`` (float (C, *spatial)) and
      ``pred_sem_seg`` (int64 (1, *spatial)) in the frame of the *original* image / volume
      (``ori_shape``), as :class:`PixelData` for images and :class:`VolumeData` for volumes:
      the logits at the batch input size are cropped to ``img_shape`` (undoing the end-padding
      of the pipeline and the data preprocessor), flipped back when the pipeline flipped the
      input (``flip`` / ``flip_direction`` for images, ``flip_axes`` for volumes), and resized
      to ``ori_shape`` (bilinear for images, trilinear for volumes);
    * ``'tensor'``: the decode head's logits at its own resolution.

    The head contract is ``toolbox.models.bases.BaseDecodeHead``: ``loss(feats, samples)``
    and ``predict(feats, samples) -> list`` of elements with ``seg_logits`` (C, *spatial) at
    the batch input size (``inputs=`` is passed too when the head ``reads_inputs``).

    Args:
        backbone, decode_head, neck: config dicts (or built modules).
        auxiliary_head: a config dict or a list of them (used in training only).
        test_cfg: how ``predict`` runs the network on the (padded) batch:

            * ``dict(mode='whole')``: on the whole batch at once;
            * ``dict(mode='slide', crop_size, stride)`` ((h, w) or (d, h, w) each): on
              overlapping ``crop_size`` windows ``stride`` apart, one window position at a
              time for the whole batch, averaging the logits uniformly where windows overlap
              (windows at the far border are shifted inside; an axis shorter than the window
              is one window of its size);
            * ``dict(mode='sliding_window', roi_size, sw_batch_size=4, overlap=0.25,
              blend='constant', sigma_scale=0.125, padding_mode='constant', cval=0.0)``: equal
              to ``monai.inferers.sliding_window_inference`` with the same arguments
              (``blend`` is MONAI's ``mode``): window placement of ``dense_patch_slices``
              (:func:`window_starts`), ``sw_batch_size`` windows per network call (windows of
              all samples of the batch, in order), logits weighted by :func:`importance_map`
              (uniform or Gaussian) and divided by the summed weights; an input smaller than
              ``roi_size`` is padded symmetrically (``padding_mode``, ``cval``) and the output
              cropped back. ``overlap`` and ``sigma_scale`` may be per axis.

            In any mode, ``keep_largest_component=dict(applied_labels, independent=True)``
            post-processes the predicted labels with :func:`keep_largest_component` (the
            medical-segmentation clean-up of MONAI / nnU-Net: stray islands become background).
        data_preprocessor: normalisation and padding (``DataPreprocessor``; pads
            ``gt_sem_seg`` with the ignore index).
    """

    def __init__(self, backbone, decode_head, neck=None, auxiliary_head=None,
                 test_cfg: dict | None = None, data_preprocessor: dict | None = None,
                 init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = _build(backbone)
        self.neck = _build(neck) if neck is not None else None
        self.decode_head = _build(decode_head)
        self.num_classes = self.decode_head.num_classes
        self.align_corners = self.decode_head.align_corners
        if auxiliary_head is None:
            self.auxiliary_head = None
        elif isinstance(auxiliary_head, (list, tuple)):
            self.auxiliary_head = nn.ModuleList([_build(h) for h in auxiliary_head])
        else:
            self.auxiliary_head = _build(auxiliary_head)
        self.test_cfg = self._check_test_cfg(dict(test_cfg or dict(mode='whole')))

    @staticmethod
    def _check_test_cfg(cfg: dict) -> dict:
        """Validate ``test_cfg`` up front (see the class docstring); fill the defaults of
        ``'sliding_window'``."""
        mode = cfg.get('mode', 'whole')
        component = cfg.get('keep_largest_component')
        if component is not None and (not isinstance(component, dict) or
                                      not component.get('applied_labels') or
                                      set(component) - {'applied_labels', 'independent'}):
            raise ValueError(f"test_cfg.keep_largest_component must be a dict with "
                             f"applied_labels (a non-empty list of labels) and optionally "
                             f"independent, got {component!r}")
        if mode not in TEST_MODES:
            raise ValueError(f"test_cfg.mode must be 'whole' or 'slide' (uniform windows) or "
                             f"'sliding_window' (MONAI-style blending), got {mode!r}")
        if mode == 'slide':
            for key in ('crop_size', 'stride'):
                _positive_ints(cfg.get(key), key, mode)
            if len(cfg['crop_size']) != len(cfg['stride']):
                raise ValueError(f"test_cfg mode='slide': crop_size {cfg['crop_size']!r} and "
                                 f"stride {cfg['stride']!r} must have the same length")
        if mode == 'sliding_window':
            unknown = set(cfg) - set(SLIDING_WINDOW_DEFAULTS) - {'mode', 'roi_size',
                                                                 'keep_largest_component'}
            if unknown:
                raise ValueError(f"test_cfg mode='sliding_window' got unknown keys "
                                 f"{sorted(unknown)}; accepted: roi_size, "
                                 f"{', '.join(SLIDING_WINDOW_DEFAULTS)}, "
                                 f"keep_largest_component")
            cfg = {**SLIDING_WINDOW_DEFAULTS, **cfg}
            _positive_ints(cfg.get('roi_size'), 'roi_size', mode)
            ndim = len(cfg['roi_size'])
            if not (isinstance(cfg['sw_batch_size'], int) and cfg['sw_batch_size'] >= 1):
                raise ValueError(f"test_cfg.sw_batch_size must be a positive int, got "
                                 f"{cfg['sw_batch_size']!r}")
            if not all(0 <= o < 1 for o in _per_axis(cfg['overlap'], ndim, 'overlap')):
                raise ValueError(f"test_cfg.overlap must be in [0, 1), got {cfg['overlap']!r}")
            if not all(s > 0 for s in _per_axis(cfg['sigma_scale'], ndim, 'sigma_scale')):
                raise ValueError(f"test_cfg.sigma_scale must be > 0, got "
                                 f"{cfg['sigma_scale']!r}")
            if cfg['blend'] not in BLENDS:
                raise ValueError(f"test_cfg.blend must be one of {BLENDS}, got "
                                 f"{cfg['blend']!r}")
            if cfg['padding_mode'] not in PADDING_MODES:
                raise ValueError(f"test_cfg.padding_mode must be one of {PADDING_MODES}, got "
                                 f"{cfg['padding_mode']!r}")
        return cfg

    def extract_feat(self, inputs: Tensor) -> tuple[Tensor, ...]:
        feats = self.backbone(inputs)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, inputs: Tensor, data_samples=None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.decode_head(self.extract_feat(inputs), **self._head_inputs(inputs))
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def _head_inputs(self, inputs: Tensor) -> dict:
        """``inputs=`` for a decode head that reads the network input (``reads_inputs``)."""
        return dict(inputs=inputs) if self.decode_head.reads_inputs else {}

    def loss(self, inputs: Tensor, data_samples) -> dict[str, Tensor]:
        feats = self.extract_feat(inputs)
        losses = dict(self.decode_head.loss(feats, data_samples, **self._head_inputs(inputs)))
        if self.auxiliary_head is None:
            return losses
        heads = self.auxiliary_head if isinstance(self.auxiliary_head, nn.ModuleList) \
            else [self.auxiliary_head]
        for k, head in enumerate(heads):
            tag = 'aux' if len(heads) == 1 else f'aux{k}'
            for name, value in head.loss(feats, data_samples).items():
                new = f'loss_{tag}_{name[5:]}' if name.startswith('loss_') else f'{tag}_{name}'
                losses[new] = value
        return losses

    def encode_decode(self, inputs: Tensor) -> Tensor:
        """(B, C_in, *spatial) -> logits (B, num_classes, *spatial) at the input size (the
        head's predict)."""
        meta = dict(batch_input_shape=tuple(inputs.shape[2:]))
        metas = [DataSample(metainfo=meta) for _ in range(inputs.shape[0])]
        preds = self.decode_head.predict(self.extract_feat(inputs), metas,
                                         **self._head_inputs(inputs))
        return torch.stack([p.seg_logits for p in preds])

    def _check_window_dims(self, inputs: Tensor, key: str) -> tuple[int, ...]:
        window = tuple(self.test_cfg[key])
        if len(window) != inputs.dim() - 2:
            raise ValueError(f'test_cfg.{key}={window} has {len(window)} axes but the inputs '
                             f'{tuple(inputs.shape)} have {inputs.dim() - 2} spatial axes')
        return window

    def slide_inference(self, inputs: Tensor) -> Tensor:
        """``test_cfg.mode='slide'``: (B, C_in, *spatial) -> logits (B, num_classes, *spatial),
        the uniform average of overlapping ``crop_size`` windows, ``stride`` apart."""
        crop = self._check_window_dims(inputs, 'crop_size')
        strides = self.test_cfg['stride']
        spatial = tuple(inputs.shape[2:])
        ranges = []  # per axis: the (start, end) of each window position
        for size, c, s in zip(spatial, crop, strides):
            grids = max(size - c + s - 1, 0) // s + 1
            ends = [min(k * s + c, size) for k in range(grids)]
            ranges.append([(max(end - c, 0), end) for end in ends])
        logits = inputs.new_zeros((inputs.shape[0], self.num_classes, *spatial))
        count = inputs.new_zeros((1, 1, *spatial))
        for window in itertools.product(*ranges):  # the last axis varies fastest
            index = (slice(None), slice(None)) + tuple(slice(a, b) for a, b in window)
            logits[index] += self.encode_decode(inputs[index])
            count[index] += 1
        return logits / count

    def sliding_window_inference(self, inputs: Tensor) -> Tensor:
        """``test_cfg.mode='sliding_window'``: (B, C_in, *spatial) -> logits
        (B, num_classes, *spatial), equal to ``monai.inferers.sliding_window_inference``
        (see the class docstring), in the dtype of ``inputs``."""
        cfg = self.test_cfg
        roi = self._check_window_dims(inputs, 'roi_size')
        ndim = len(roi)
        ori_size = tuple(inputs.shape[2:])
        # an axis shorter than the window is padded on both sides (half before), then cropped
        before = [max(r - s, 0) // 2 for r, s in zip(roi, ori_size)]
        after = [max(r - s, 0) - b for r, s, b in zip(roi, ori_size, before)]
        if any(before) or any(after):
            pad = [w for axis in reversed(range(ndim)) for w in (before[axis], after[axis])]
            if cfg['padding_mode'] == 'constant':
                inputs = F.pad(inputs, pad, mode='constant', value=cfg['cval'])
            else:
                inputs = F.pad(inputs, pad, mode=cfg['padding_mode'])
        image_size = tuple(inputs.shape[2:])
        starts = window_starts(image_size, roi, _per_axis(cfg['overlap'], ndim, 'overlap'))
        windows = [tuple(slice(int(a), int(a) + r) for a, r in zip(corner, roi))
                   for corner in starts]
        weights = importance_map(roi, cfg['blend'], cfg['sigma_scale'], inputs.device,
                                 inputs.dtype)
        count = inputs.new_zeros(image_size)
        for window in windows:
            count[window] += weights
        batch = inputs.shape[0]
        logits = None
        # window g of the whole batch is window g % num_windows of sample g // num_windows
        total = batch * len(windows)
        for first in range(0, total, cfg['sw_batch_size']):
            chunk = [(g // len(windows), windows[g % len(windows)])
                     for g in range(first, min(first + cfg['sw_batch_size'], total))]
            crops = torch.stack([inputs[(b, slice(None)) + window] for b, window in chunk])
            preds = self.encode_decode(crops)
            if tuple(preds.shape[2:]) != roi:
                raise ValueError(f'sliding_window: the network returned logits of spatial '
                                 f'size {tuple(preds.shape[2:])} for windows of {roi}')
            preds = preds * weights
            if logits is None:
                logits = inputs.new_zeros((batch, preds.shape[1], *image_size))
            for pred, (b, window) in zip(preds, chunk):
                logits[(b, slice(None)) + window] += pred
        logits = logits / count
        crop = tuple(slice(b, b + s) for b, s in zip(before, ori_size))
        return logits[(slice(None), slice(None)) + crop]

    def inference(self, inputs: Tensor) -> Tensor:
        """Logits (B, num_classes, *spatial) at the (padded) batch input size, by
        ``test_cfg.mode``."""
        mode = self.test_cfg.get('mode', 'whole')
        if mode == 'slide':
            return self.slide_inference(inputs)
        if mode == 'sliding_window':
            return self.sliding_window_inference(inputs)
        return self.encode_decode(inputs)

    def predict(self, inputs: Tensor, data_samples=None) -> list[DataSample]:
        if data_samples is None:
            shape = tuple(inputs.shape[2:])
            data_samples = [DataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
                            for _ in range(inputs.shape[0])]
        logits = self.inference(inputs)
        return self.postprocess(logits, data_samples)

    def postprocess(self, logits: Tensor, data_samples) -> list[DataSample]:
        """Logits (B, C, *spatial) at the batch input size -> per sample ``seg_logits`` and
        ``pred_sem_seg`` in the original frame: crop the end-padding to ``img_shape``, undo
        the flip, resize to ``ori_shape`` (bilinear / trilinear), then argmax (and, with
        ``test_cfg.keep_largest_component``, :func:`keep_largest_component` on the labels;
        ``seg_logits`` stay as they are)."""
        component = self.test_cfg.get('keep_largest_component')
        ndim = logits.dim() - 2
        element = PixelData if ndim == 2 else VolumeData
        mode = 'bilinear' if ndim == 2 else 'trilinear'
        for one, sample in zip(logits, data_samples):
            img_shape = tuple(sample.metainfo.get('img_shape', one.shape[1:]))[:ndim]
            one = one[(None, slice(None)) + tuple(slice(0, s) for s in img_shape)]
            if ndim == 2 and sample.metainfo.get('flip', False):
                direction = sample.metainfo.get('flip_direction', 'horizontal')
                one = one.flip(dims=[3] if direction == 'horizontal' else [2])
            flip_axes = tuple(sample.metainfo.get('flip_axes', ()))
            if ndim == 3 and flip_axes:
                one = one.flip(dims=[2 + a for a in flip_axes])
            ori_shape = tuple(sample.metainfo.get('ori_shape', img_shape))[:ndim]
            if tuple(one.shape[2:]) != ori_shape:
                one = F.interpolate(one, size=ori_shape, mode=mode,
                                    align_corners=self.align_corners)
            sample.seg_logits = element(data=one[0])
            pred = one[0].argmax(0, keepdim=True)
            if component is not None:
                pred = keep_largest_component(pred, **component)
            sample.pred_sem_seg = element(data=pred)
        return list(data_samples)
