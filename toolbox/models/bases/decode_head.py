"""Base of every semantic segmentation decode head."""
from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.structures import PixelData
from torch import Tensor, nn

from toolbox.models.utils import to_float32
from toolbox.registry import MODELS
from toolbox.structures import IGNORE_INDEX, VolumeData

from .init import apply_init_cfg, kaiming_init_conv_norm


def resize(x: Tensor, size, align_corners: bool = False) -> Tensor:
    """Bilinear (4-D) or trilinear (5-D) resize of (B, C, *spatial) to ``size``; a no-op when
    the map already has that size."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = 'trilinear' if x.dim() == 5 else 'bilinear'
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=align_corners)


def fit_to(x: Tensor, size) -> Tensor:
    """(B, C, *s) -> (B, C, *size): crop or zero-pad at the end of each spatial axis
    (``F.pad`` crops with negative widths). Decoders that upsample by 2 use it to meet a skip
    map of odd size (pooling floored it on the way down)."""
    pad = [w for have, want in zip(reversed(x.shape[2:]), reversed(tuple(size)))
           for w in (0, want - have)]
    return F.pad(x, pad) if any(pad) else x


class BaseDecodeHead(BaseModule, metaclass=abc.ABCMeta):
    """Decode head contract (what :class:`toolbox.models.segmentors.EncoderDecoder` relies on)
    and the classifier, loss and predict every decode head shares.

    * ``features(feats) -> (B, channels, h, w)``: implemented by each head; ``feats`` is the
      backbone's (or neck's) tuple and ``in_index`` picks the input. A head that also reads
      the network input (UNETR's encoder branch) sets ``reads_inputs = True`` and implements
      ``features(feats, inputs)``; the segmentor then passes ``inputs=`` (B, C_in, *spatial)
      to ``forward`` / ``loss`` / ``predict``.
    * 2D and 3D: ``spatial_dims`` picks the classifier (Conv2d / Conv3d) and the dropout;
      maps are (B, C, H, W) or (B, C, D, H, W), labels (1, H, W) or (1, D, H, W) per sample.
    * ``forward(feats) -> (B, num_classes, h, w)``: dropout then the 1x1 classifier
      ``conv_seg`` (with bias), at the resolution of the head's finest input.
    * ``loss(feats, data_samples) -> dict``: the logits are resized bilinearly to the ground
      truth (``gt_sem_seg.data`` (1, H, W) per sample; the data preprocessor pads it to the
      batch input size with ``IGNORE_INDEX``), then ``loss_decode(logits, labels,
      ignore_index=...)`` gives ``{loss_decode.loss_name: loss}`` (e.g. ``'loss_ce'``) and
      ``acc_seg``, the pixel accuracy in percent over non-ignored pixels (logged, not
      optimised).
    * ``predict(feats, data_samples) -> list[PixelData | VolumeData]``: per sample
      ``seg_logits`` (C, *spatial) resized to the sample's ``batch_input_shape`` (the
      padded network input). Removing the padding, undoing the flip and resizing to the
      original image are the segmentor's job.

    ``align_corners`` is passed to every bilinear resize: ``False`` (torchvision, mmseg) maps
    pixel *areas*; ``True`` (TF DeepLab, 513x513 crops) maps corner pixels onto each other and
    suits inputs of size ``k * output_stride + 1``.

    Args:
        in_channels: channels of the input picked by ``in_index``.
        channels: width of the head's layers (input of ``conv_seg``).
        num_classes: number of classes (logit channels).
        in_index: which backbone output the head reads.
        dropout_ratio: dropout before ``conv_seg``.
        norm_cfg: norm of the head's convs; ``None`` for biased convs without norm.
        align_corners: see above.
        ignore_index: label ignored by the loss and the accuracy (:data:`IGNORE_INDEX`).
        loss_decode: loss config; called as ``loss(logits (B, C, *spatial), labels
            (B, *spatial), ignore_index=...)``, its ``loss_name`` attribute names the loss key.
        spatial_dims: 2 (images) or 3 (volumes).
        init_cfg: mmengine ``init_cfg`` applied by ``init_weights()``; layers are initialised
            at construction by :meth:`reset_parameters`.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, in_index: int = -1,
                 dropout_ratio: float = 0.1, norm_cfg: dict | None = dict(type='BN'),
                 align_corners: bool = False, ignore_index: int = IGNORE_INDEX,
                 loss_decode: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 spatial_dims: int = 2, init_cfg: dict | list | None = None):
        super().__init__(init_cfg=init_cfg)
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        if spatial_dims not in (2, 3):
            raise ValueError(f'spatial_dims must be 2 or 3, got {spatial_dims}')
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.channels = channels
        self.num_classes = num_classes
        self.in_index = in_index
        self.norm_cfg = norm_cfg
        self.align_corners = align_corners
        self.ignore_index = ignore_index
        self.loss_decode = MODELS.build(loss_decode)
        dropout = nn.Dropout2d if spatial_dims == 2 else nn.Dropout3d
        self.dropout = dropout(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(channels, num_classes, 1)

    def reset_parameters(self) -> None:
        """Kaiming-normal convs, unit norms, and a small-normal classifier (std 0.01).

        Subclasses call it at the end of their ``__init__``."""
        kaiming_init_conv_norm(self.modules())
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def init_weights(self) -> None:
        """Apply ``init_cfg`` only (see :mod:`toolbox.models.bases.init`)."""
        apply_init_cfg(self)

    #: whether ``features`` also takes the network input (see the class docstring)
    reads_inputs = False

    @abc.abstractmethod
    def features(self, feats: Sequence[Tensor]) -> Tensor:
        """Backbone outputs -> the (B, channels, *spatial) map the classifier reads."""

    def forward(self, feats: Sequence[Tensor], inputs: Tensor | None = None) -> Tensor:
        """Backbone outputs (and the input when ``reads_inputs``) -> logits
        (B, num_classes, *spatial)."""
        if self.reads_inputs:
            if inputs is None:
                raise ValueError(f'{type(self).__name__} reads the network input: pass inputs=')
            return self.conv_seg(self.dropout(self.features(feats, inputs)))
        return self.conv_seg(self.dropout(self.features(feats)))

    def loss(self, feats: Sequence[Tensor], data_samples,
             inputs: Tensor | None = None) -> dict[str, Tensor]:
        logits = to_float32(self(feats, inputs))  # losses and resizing in fp32 under autocast
        labels = torch.stack([s.gt_sem_seg.data for s in data_samples]).squeeze(1)  # (B, *sp)
        logits = resize(logits, labels.shape[1:], self.align_corners)
        loss = self.loss_decode(logits, labels, ignore_index=self.ignore_index)
        with torch.no_grad():
            valid = labels != self.ignore_index
            correct = (logits.argmax(1) == labels) & valid
            acc = correct.sum() * 100.0 / valid.sum().clamp(min=1)
        return {getattr(self.loss_decode, 'loss_name', 'loss_seg'): loss, 'acc_seg': acc}

    def predict(self, feats: Sequence[Tensor], data_samples,
                inputs: Tensor | None = None) -> list[PixelData | VolumeData]:
        """Per sample ``seg_logits`` (C, *spatial) at the sample's batch input size, in a
        ``PixelData`` (2D) or ``VolumeData`` (3D)."""
        logits = to_float32(self(feats, inputs))  # losses and resizing in fp32 under autocast
        size = data_samples[0].metainfo['batch_input_shape']
        logits = resize(logits, size, self.align_corners)
        element = VolumeData if logits.dim() == 5 else PixelData
        return [element(seg_logits=one) for one in logits]
