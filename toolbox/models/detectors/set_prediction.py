"""Query-based set-prediction detector (DETR family): backbone -> transformer -> set head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.models.base import ToolboxModel
from toolbox.registry import MODELS

from .utils import attach_predictions


@MODELS.register_module()
class SetPredictionDetector(ToolboxModel):
    """DETR's flow with each part its own registered module (Carion et al. 2020).

    ::

        feats  = neck(backbone(inputs))[-1]                 (B, C, H, W), C = embed_dims
        mask   = padding mask of the batch, resized         (B, H, W) bool, True = padding
        pos    = positional_encoding(mask)                  (B, C, H, W)
        memory = encoder(query=feats (B, HW, C), query_pos=pos (B, HW, C),
                         key_padding_mask=mask (B, HW))   -> (B, HW, C)
        hidden = decoder(query=zeros (B, Q, C), key=memory, query_pos=queries (B, Q, C),
                         key_pos=pos, key_padding_mask=mask)
                                                          -> (L, B, Q, C), one per layer
        bbox_head.loss(hidden, data_samples) / bbox_head.predict(hidden, data_samples)

    ``queries`` are ``num_queries`` learned embeddings (``self.query_embedding``). The neck is
    where the backbone's channels are projected to ``embed_dims`` (e.g. a 1x1 conv); without
    a neck the backbone's last map must already have ``embed_dims`` channels. The head owns
    the Hungarian assigner and the set losses (per decoder layer: deep supervision) and
    returns boxes in the input frame; this class maps them to the original image.

    Args:
        backbone, neck: as :class:`SingleStageDetector`.
        positional_encoding: ``mask (B, H, W) -> (B, embed_dims, H, W)``.
        encoder: ``(query, query_pos, key_padding_mask) -> memory``; ``None`` for none.
        decoder: ``(query, key, query_pos, key_pos, key_padding_mask) -> (L, B, Q, C)``.
        bbox_head: set-prediction head, ``loss(hidden, samples)``, ``predict(hidden,
            samples)`` and ``forward(hidden)``.
        num_queries: number of object queries Q (DETR: 100).
        embed_dims: transformer width C (DETR: 256).
    """

    def __init__(self, backbone: dict, positional_encoding: dict, decoder: dict,
                 bbox_head: dict, num_queries: int = 100, embed_dims: int = 256,
                 encoder: dict | None = None, neck: dict | None = None,
                 data_preprocessor: dict | None = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.positional_encoding = MODELS.build(positional_encoding)
        self.encoder = MODELS.build(encoder) if encoder is not None else None
        self.decoder = MODELS.build(decoder)
        self.bbox_head = MODELS.build(bbox_head)
        self.num_queries = num_queries
        self.embed_dims = embed_dims
        self.query_embedding = nn.Embedding(num_queries, embed_dims)

    def extract_feat(self, inputs: Tensor):
        feats = self.backbone(inputs)
        return self.neck(feats) if self.neck is not None else feats

    @staticmethod
    def padding_mask(inputs: Tensor, data_samples, size) -> Tensor:
        """(B, h, w) bool, True where the feature map covers batch padding.

        Built at the input resolution from each sample's ``img_shape`` (the image before
        padding), then resized (nearest) to ``size``. Without samples nothing is padding.
        """
        batch, _, height, width = inputs.shape
        mask = inputs.new_ones((batch, height, width))
        if data_samples is None:
            mask.zero_()
        else:
            for i, sample in enumerate(data_samples):
                h, w = sample.metainfo.get('img_shape', (height, width))[:2]
                mask[i, :h, :w] = 0
        return F.interpolate(mask[:, None], size=tuple(size), mode='nearest')[:, 0].bool()

    def forward_transformer(self, inputs: Tensor, data_samples=None) -> Tensor:
        """Images -> decoder hidden states (L, B, Q, C) (see the class docstring)."""
        feat = self.extract_feat(inputs)[-1]
        if feat.shape[1] != self.embed_dims:
            raise ValueError(f'the last feature map has {feat.shape[1]} channels, the '
                             f'transformer {self.embed_dims}: project it in the neck')
        batch = feat.shape[0]
        mask = self.padding_mask(inputs, data_samples, feat.shape[-2:])
        pos = self.positional_encoding(mask).flatten(2).transpose(1, 2)  # (B, HW, C)
        memory = feat.flatten(2).transpose(1, 2)  # (B, HW, C)
        key_padding_mask = mask.flatten(1)  # (B, HW)
        if self.encoder is not None:
            memory = self.encoder(query=memory, query_pos=pos, key_padding_mask=key_padding_mask)
        query_pos = self.query_embedding.weight[None].expand(batch, -1, -1)
        query = torch.zeros_like(query_pos)
        return self.decoder(query=query, key=memory, query_pos=query_pos, key_pos=pos,
                            key_padding_mask=key_padding_mask)

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        hidden = self.forward_transformer(inputs, data_samples)
        if mode == 'loss':
            return self.bbox_head.loss(hidden, data_samples)
        if mode == 'predict':
            return attach_predictions(data_samples, self.bbox_head.predict(hidden, data_samples))
        if mode == 'tensor':
            return self.bbox_head(hidden)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")
