"""Swin Transformer checkpoint layouts: official (microsoft), timm and MMDetection state dicts
converted to the keys of :class:`~toolbox_plugins.backbones.swin.SwinTransformer`, which are
MMDetection's (ANCHORS.md 1.4):

* official: ``layers.{i}`` -> ``stages.{i}``, ``attn.`` -> ``attn.w_msa.``, ``mlp.fc1`` ->
  ``ffn.layers.0.0``, ``mlp.fc2`` -> ``ffn.layers.1``, ``patch_embed.proj`` ->
  ``patch_embed.projection``, and the patch-merging ``reduction.weight`` and ``norm`` re-ordered
  from the official concat order (x0, x1, x2, x3 = (row, col) offsets (0,0), (1,0), (0,1),
  (1,1), channel-minor) to ``nn.Unfold``'s (channel-major, offsets (0,0), (0,1), (1,0), (1,1)):
  ``w.reshape(out, 4, C)[:, [0, 2, 1, 3]].transpose(1, 2).reshape(out, 4 * C)``;
* timm >= 0.9: the same, but the downsample sits at the *start* of the next stage:
  ``layers.{i}.downsample`` -> ``stages.{i - 1}.downsample`` (timm ``features_only`` state
  dicts spell ``layers_{i}``);
* both: the classifier's final ``norm`` becomes ``norm{last stage}`` (the norm of the last
  feature map, as timm's ``forward_intermediates(norm=True)`` applies it), ``head.*`` is
  reported as unexpected;
* all three: the ``relative_position_index`` and ``attn_mask`` buffers are dropped (with a log
  line): the model recomputes them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

CHECKPOINT_FORMATS = ('official', 'timm', 'mmdet')
# Official concat order (x0, x1, x2, x3) -> nn.Unfold kernel order: unfold's offset k holds x_p[k].
_UNFOLD_FROM_OFFICIAL = [0, 2, 1, 3]


def detect_checkpoint_format(state_dict: Mapping[str, Tensor]) -> str:
    """'mmdet', 'official' or 'timm', from the key names (module docstring).

    mmdet: ``stages.*`` / ``attn.w_msa.*`` keys; official: a downsample in stage 0
    (``layers.0.downsample.*``, at the end of the stage); timm: ``layers.*`` (or
    ``layers_*``) keys without one. Raises ``ValueError`` when no Swin key is found.
    """
    keys = list(state_dict)
    if any(k.startswith('stages.') or '.attn.w_msa.' in k for k in keys):
        return 'mmdet'
    if any(re.match(r'layers[._]0\.downsample\.', k) for k in keys):
        return 'official'
    if any(re.match(r'layers[._]\d+\.', k) for k in keys):
        return 'timm'
    raise ValueError(
        f'cannot tell the Swin checkpoint layout: no key starts with stages. (mmdet) or '
        f'layers. (official / timm); first keys: {keys[:5]}. Strip a prefix with prefix_map '
        f"(e.g. {{'backbone.': ''}} for a detector checkpoint) or give checkpoint_format")


def _unfold_order(t: Tensor) -> Tensor:
    """Patch-merging tensor over 4C input channels (reduction weight (out, 4C) or norm (4C,)),
    official concat order -> nn.Unfold order (module docstring)."""
    lead = t.shape[:-1]
    c = t.shape[-1] // 4
    t = t.reshape(*lead, 4, c)[..., _UNFOLD_FROM_OFFICIAL, :]
    return t.transpose(-1, -2).reshape(*lead, 4 * c)


def convert_swin_state_dict(state_dict: Mapping[str, Tensor], checkpoint_format: str | None,
                            num_stages: int = 4) -> tuple[dict[str, Tensor], str, list[str]]:
    """Convert an official / timm / mmdet Swin state dict to this module's (MMDetection's) keys.

    Args:
        state_dict: the checkpoint's tensors (after any user prefix renaming).
        checkpoint_format: 'official', 'timm', 'mmdet' or ``None`` to detect it
            (:func:`detect_checkpoint_format`).
        num_stages: stages of the model; the classifier's final ``norm`` becomes
            ``norm{num_stages - 1}``.

    Returns:
        ``(converted, format, dropped)``: ``dropped`` lists the derived buffers removed
        (``relative_position_index``, ``attn_mask``). Keys that have no counterpart (``head.*``,
        ``absolute_pos_embed``) are kept, so that the loader reports them as unexpected.
    """
    if checkpoint_format is None:
        checkpoint_format = detect_checkpoint_format(state_dict)
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ValueError(f'checkpoint_format must be one of {CHECKPOINT_FORMATS} or None, got '
                         f'{checkpoint_format!r}')
    out, dropped = {}, []
    for key, value in state_dict.items():
        if key.endswith(('relative_position_index', 'attn_mask')):
            dropped.append(key)
            continue
        if checkpoint_format != 'mmdet':
            key = re.sub(r'^layers_(\d+)\.', r'layers.\1.', key)
            match = re.match(r'layers\.(\d+)\.downsample\.(.*)', key)
            if match:
                stage = int(match.group(1)) - (checkpoint_format == 'timm')
                key = f'stages.{stage}.downsample.{match.group(2)}'
                if match.group(2) in ('reduction.weight', 'norm.weight', 'norm.bias'):
                    value = _unfold_order(value)
            key = re.sub(r'^layers\.', 'stages.', key)
            key = key.replace('.attn.', '.attn.w_msa.')
            key = key.replace('.mlp.fc1.', '.ffn.layers.0.0.').replace('.mlp.fc2.',
                                                                         '.ffn.layers.1.')
            key = re.sub(r'^patch_embed\.proj\.', 'patch_embed.projection.', key)
            key = re.sub(r'^norm\.', f'norm{num_stages - 1}.', key)
        out[key] = value
    return out, checkpoint_format, dropped
