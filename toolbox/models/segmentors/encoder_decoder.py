"""Encoder-decoder segmentor: backbone -> (neck) -> decode head (+ auxiliary heads in training)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from torch import Tensor, nn

from toolbox.models.base import ToolboxModel
from toolbox.registry import MODELS
from toolbox.structures import DataSample


def _build(cfg):
    return cfg if isinstance(cfg, nn.Module) else MODELS.build(cfg)


@MODELS.register_module()
class EncoderDecoder(ToolboxModel):
    """``backbone`` -> optional ``neck`` -> ``decode_head``; ``auxiliary_head`` adds losses.

    ``forward(inputs (B, 3, H, W), data_samples, mode)``:

    * ``'loss'``: ``decode_head.loss`` (keys such as ``loss_ce``, ``acc_seg``) plus each
      auxiliary head's, renamed ``loss_aux_ce`` / ``aux_acc_seg`` (``loss_aux{k}_*`` for the
      k-th of several auxiliary heads);
    * ``'predict'``: the data samples with ``seg_logits`` (PixelData, float (C, h, w)) and
      ``pred_sem_seg`` (PixelData, int64 (1, h, w)) in the frame of the *original* image
      (``ori_shape`` (h, w)): the logits at the batch input size are cropped to ``img_shape``
      (undoing the data preprocessor's bottom/right padding), flipped back when the test
      pipeline flipped the image, and resized bilinearly to ``ori_shape``;
    * ``'tensor'``: the decode head's logits at its own resolution.

    The head contract is ``toolbox.models.bases.BaseDecodeHead``: ``loss(feats, samples)``
    and ``predict(feats, samples) -> list[PixelData(seg_logits=(C, H_in, W_in))]``.

    Args:
        backbone, decode_head, neck: config dicts (or built modules).
        auxiliary_head: a config dict or a list of them (used in training only).
        test_cfg: ``dict(mode='whole')`` runs the network on the whole (padded) batch;
            ``dict(mode='slide', crop_size=(h, w), stride=(h, w))`` runs it on overlapping
            windows and averages the logits where windows overlap (windows at the border are
            shifted inside the image; an image smaller than the window is one window).
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
        self.test_cfg = dict(test_cfg or dict(mode='whole'))
        mode = self.test_cfg.get('mode', 'whole')
        if mode not in ('whole', 'slide'):
            raise ValueError(f"test_cfg.mode must be 'whole' or 'slide', got {mode!r}")
        if mode == 'slide':
            for key in ('crop_size', 'stride'):
                value = self.test_cfg.get(key)
                if value is None or len(value) != 2 or min(value) < 1:
                    raise ValueError(f"test_cfg mode='slide' needs {key}=(h, w) of positive "
                                     f"ints, got {value!r}")

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
        """(B, 3, H, W) -> logits (B, C, H, W) at the input size (the head's predict)."""
        meta = dict(batch_input_shape=tuple(inputs.shape[-2:]))
        metas = [DataSample(metainfo=meta) for _ in range(inputs.shape[0])]
        preds = self.decode_head.predict(self.extract_feat(inputs), metas,
                                         **self._head_inputs(inputs))
        return torch.stack([p.seg_logits for p in preds])

    def slide_inference(self, inputs: Tensor) -> Tensor:
        """Average the logits of overlapping ``crop_size`` windows, ``stride`` apart."""
        h_crop, w_crop = self.test_cfg['crop_size']
        h_stride, w_stride = self.test_cfg['stride']
        batch, _, height, width = inputs.shape
        h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
        logits = inputs.new_zeros((batch, self.num_classes, height, width))
        count = inputs.new_zeros((1, 1, height, width))
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2 = min(h_idx * h_stride + h_crop, height)
                x2 = min(w_idx * w_stride + w_crop, width)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                logits[:, :, y1:y2, x1:x2] += self.encode_decode(inputs[:, :, y1:y2, x1:x2])
                count[:, :, y1:y2, x1:x2] += 1
        return logits / count

    def inference(self, inputs: Tensor) -> Tensor:
        """Logits (B, C, H, W) at the (padded) batch input size, by ``test_cfg.mode``."""
        if self.test_cfg.get('mode', 'whole') == 'slide':
            return self.slide_inference(inputs)
        return self.encode_decode(inputs)

    def predict(self, inputs: Tensor, data_samples=None) -> list[DataSample]:
        if data_samples is None:
            shape = tuple(inputs.shape[-2:])
            data_samples = [DataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
                            for _ in range(inputs.shape[0])]
        logits = self.inference(inputs)
        return self.postprocess(logits, data_samples)

    def postprocess(self, logits: Tensor, data_samples) -> list[DataSample]:
        """Crop the padding, undo the flip, resize to ``ori_shape``, then argmax."""
        for one, sample in zip(logits, data_samples):
            img_h, img_w = sample.metainfo.get('img_shape', one.shape[-2:])
            one = one[None, :, :img_h, :img_w]
            if sample.metainfo.get('flip', False):
                direction = sample.metainfo.get('flip_direction', 'horizontal')
                one = one.flip(dims=[3] if direction == 'horizontal' else [2])
            ori_shape = tuple(sample.metainfo.get('ori_shape', (img_h, img_w)))
            if tuple(one.shape[-2:]) != ori_shape:
                one = F.interpolate(one, size=ori_shape, mode='bilinear',
                                    align_corners=self.align_corners)
            sample.seg_logits = PixelData(data=one[0])
            sample.pred_sem_seg = PixelData(data=one[0].argmax(0, keepdim=True))
        return list(data_samples)
