"""Swin Transformer backbone: parity with timm and HF transformers, checkpoint layouts, counts.

Checkpoint layouts used here (reference/ANCHORS.md 1.4), each derived in this file from a timm
state dict by the rules ANCHORS.md states, independently of the plugin's converter:

* timm (>= 0.9): the model's own ``state_dict()``; downsample at the start of stage i + 1
  (``layers.{i}.downsample``, i >= 1), classifier ``head.fc``. ``features_only`` models spell
  the stages ``layers_{i}``.
* official (microsoft): undo timm's ``checkpoint_filter_fn``: ``layers.{i}.downsample`` ->
  ``layers.{i - 1}.downsample``, ``head.fc.`` -> ``head.``, plus the ``relative_position_index``
  and ``attn_mask`` buffers that official checkpoints carry.
* mmdet: official keys through MMDetection's ``swin_converter`` renames (``layers`` ->
  ``stages``, ``attn.`` -> ``attn.w_msa.``, ``mlp.fc1`` -> ``ffn.layers.0.0``, ``mlp.fc2`` ->
  ``ffn.layers.1``, ``patch_embed.proj`` -> ``patch_embed.projection``) and the patch-merging
  re-order ``x.reshape(out, 4, in // 4)[:, [0, 2, 1, 3], :].transpose(1, 2)`` (norm likewise),
  with the per-output norms ``norm{i}`` and the persistent ``relative_position_index`` buffers.
"""
from __future__ import annotations

import math
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine import Config
from torch import nn

from toolbox.registry import MODELS
from toolbox_plugins.backbones import swin as swin_module
from toolbox_plugins.backbones.swin import (PatchMerging, ShiftWindowMSA, SwinTransformer,
                                            relative_position_index, shifted_window_mask)
from toolbox_plugins.backbones.swin_checkpoints import (convert_swin_state_dict,
                                                        detect_checkpoint_format)

from .conftest import REPO_ROOT

TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TIMM_TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
ATOL = 1e-5


def _perturb_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random biases and norm weights (timm initialises them to 0 / 1), so that every tensor
    that is copied matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def _randomise_out_norms_(model: SwinTransformer, indices=(0, 1, 2, 3), seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in indices:
            norm = getattr(model, f'norm{i}')
            norm.weight.copy_(1 + 0.2 * torch.randn(norm.weight.shape, generator=gen))
            norm.bias.copy_(0.2 * torch.randn(norm.bias.shape, generator=gen))


def _layer_norm_nchw(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias,
                        norm.eps).permute(0, 3, 1, 2)


def _image(h: int, w: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ checkpoint layouts

def timm_to_official(sd: dict, num_blocks: tuple[int, ...], window_size: int = 7) -> dict:
    out = {}
    for k, v in sd.items():
        m = re.match(r'layers\.(\d+)\.downsample\.(.*)', k)
        if m:
            k = f'layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}'
        out[k.replace('head.fc.', 'head.')] = v
    n = window_size ** 2
    for i, depth in enumerate(num_blocks):  # buffers that official checkpoints carry
        for j in range(depth):
            out[f'layers.{i}.blocks.{j}.attn.relative_position_index'] = torch.zeros(
                n, n, dtype=torch.long)
            if j % 2:
                out[f'layers.{i}.blocks.{j}.attn_mask'] = torch.zeros(4, n, n)
    return out


def official_to_mmdet(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k.endswith('attn_mask') or k.startswith(('head.', 'norm.')):
            continue  # mmdet keeps neither the masks nor the classifier
        if 'downsample.reduction' in k or 'downsample.norm' in k:
            if v.dim() == 2:
                out_ch, in_ch = v.shape
                v = v.reshape(out_ch, 4, in_ch // 4)[:, [0, 2, 1, 3], :].transpose(1, 2)
                v = v.reshape(out_ch, in_ch)
            else:
                v = v.reshape(4, -1)[[0, 2, 1, 3], :].transpose(0, 1).reshape(-1)
        k = re.sub(r'^layers\.', 'stages.', k)
        k = k.replace('.attn.', '.attn.w_msa.')
        k = k.replace('.mlp.fc1.', '.ffn.layers.0.0.').replace('.mlp.fc2.', '.ffn.layers.1.')
        k = k.replace('patch_embed.proj.', 'patch_embed.projection.')
        out[k] = v
    return out


def hf_to_official(sd: dict) -> dict:
    """HF ``SwinBackbone`` keys -> official (downsample at the end of a stage in both; HF's
    concat order is the official one), the stage norms as this backbone's ``norm{i}``."""
    out = {}
    for k, v in sd.items():
        k = k.replace('swin.embeddings.patch_embeddings.projection.', 'patch_embed.proj.')
        k = k.replace('swin.embeddings.norm.', 'patch_embed.norm.')
        k = k.replace('swin.encoder.layers.', 'layers.')
        k = k.replace('.layernorm_before.', '.norm1.').replace('.layernorm_after.', '.norm2.')
        k = k.replace('.attention.relative_position_bias.', '.attn.')
        k = k.replace('.attention.o_proj.', '.attn.proj.')
        m = re.match(r'hidden_states_norms\.stage(\d)\.(.*)', k)
        if m:
            k = f'norm{int(m.group(1)) - 1}.{m.group(2)}'
        if k.startswith('swin.layernorm.'):
            continue
        out[k] = v
    for k in [k for k in out if '.attention.q_proj.' in k]:
        kk, kv = k.replace('q_proj', 'k_proj'), k.replace('q_proj', 'v_proj')
        new = k.replace('.attention.q_proj.', '.attn.qkv.')
        out[new] = torch.cat([out.pop(k), out.pop(kk), out.pop(kv)], 0)
    return out


# ------------------------------------------------------------------------------ timm parity

@pytest.mark.parametrize('size', [(224, 224), (224, 448)])
def test_swin_t_features_equal_timm(size, tmp_path):
    """Swin-T through a timm checkpoint file (``pretrained=`` + ``init_weights()``): every stage
    equals timm's ``forward_intermediates`` (stages 0-2 through our output norms, stage 3
    through timm's final norm, which the loader maps to ``norm3``). (224, 448) has a last stage
    of 7 x 14: shifted along W only, as timm does."""
    torch.manual_seed(0)
    ref = _perturb_(timm.create_model('swin_tiny_patch4_window7_224', pretrained=False,
                                      img_size=size)).eval()
    path = tmp_path / 'swin_tiny_timm.pth'
    torch.save(ref.state_dict(), path)
    model = MODELS.build(dict(type='SwinTransformer', arch='T', drop_path_rate=0.,
                              pretrained=str(path)))
    report = model.init_weights()
    assert report == dict(missing=[f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')],
                          unexpected=['head.fc.weight', 'head.fc.bias'], mismatched=[])
    _randomise_out_norms_(model, (0, 1, 2))  # new (norm3 is timm's): make them non-trivial
    model.eval()
    x = _image(*size)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, norm=True, intermediates_only=True)
        outs = model(x)
    assert [o.shape for o in outs] == [
        (1, 96 * 2 ** i, size[0] // 4 // 2 ** i, size[1] // 4 // 2 ** i) for i in range(4)]
    for i, (out, exp) in enumerate(zip(outs, expected)):
        if i < 3:
            exp = _layer_norm_nchw(exp, getattr(model, f'norm{i}'))
        torch.testing.assert_close(out, exp, rtol=0, atol=ATOL, msg=f'stage {i}')


def test_timm_features_only_state_dict_loads():
    """A timm ``features_only`` state dict (``layers_{i}``, no final norm) loads completely;
    features equal timm's (NHWC) after our output norms."""
    torch.manual_seed(0)
    ref = _perturb_(timm.create_model('swin_tiny_patch4_window7_224', pretrained=False,
                                      features_only=True, **TIMM_TINY)).eval()
    assert any(k.startswith('layers_0.') for k in ref.state_dict())
    model = SwinTransformer(arch=TINY, drop_path_rate=0.).eval()
    report = model.load_pretrained(ref.state_dict())
    assert report == dict(missing=[f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')],
                          unexpected=[], mismatched=[])
    _randomise_out_norms_(model)
    x = _image(224, 224)
    with torch.no_grad():
        outs = model(x)
        for i, feat in enumerate(ref(x)):
            exp = _layer_norm_nchw(feat.permute(0, 3, 1, 2), getattr(model, f'norm{i}'))
            torch.testing.assert_close(outs[i], exp, rtol=0, atol=ATOL)


# ----------------------------------------------------------- HF parity: padding, any size

@pytest.mark.parametrize('size', [(200, 264), (250, 300)])
def test_always_partition_equals_hf_swin_backbone_at_sizes_not_multiple_of_32(size):
    """HF ``SwinBackbone`` pads (patch embedding, odd patch merging, windows) and always shifts,
    like MMDetection: ``always_partition=True`` matches it. (200, 264) gives stage maps 50x66,
    25x33, 13x17, 7x9 (odd merges, a last stage no larger than the window); (250, 300) pads the
    image itself (250 is not a multiple of 4)."""
    from transformers import SwinBackbone, SwinConfig
    torch.manual_seed(0)
    cfg = SwinConfig(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7,
                     drop_path_rate=0.0, out_features=['stage1', 'stage2', 'stage3', 'stage4'])
    ref = _perturb_(SwinBackbone(cfg)).eval()
    model = SwinTransformer(arch=TINY, drop_path_rate=0., always_partition=True,
                            checkpoint_format='official').eval()
    report = model.load_pretrained(hf_to_official(ref.state_dict()))
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    x = _image(*size, batch=2)
    with torch.no_grad():
        expected = ref(x).feature_maps
        outs = model(x)
    for i, (out, exp) in enumerate(zip(outs, expected)):
        assert out.shape == (2, 16 * 2 ** i, math.ceil(size[0] / 4 / 2 ** i),
                             math.ceil(size[1] / 4 / 2 ** i))
        torch.testing.assert_close(out, exp, rtol=0, atol=ATOL, msg=f'stage {i}')


@pytest.mark.parametrize('shift', [(0, 0), (3, 3), (0, 3)])
def test_window_padding_equals_explicit_pad_and_crop(shift):
    """Padding inside the attention: a 10 x 12 map equals the explicitly zero-padded 14 x 14 map
    attended as is, cropped back (pad, then roll: the mask sees the padded map)."""
    torch.manual_seed(0)
    attn = _perturb_(ShiftWindowMSA(8, 2, 7, True, 0., 0.)).eval()
    nn.init.normal_(attn.w_msa.relative_position_bias_table)
    h, w, hp, wp = 10, 12, 14, 14
    x = torch.randn(2, h, w, 8)
    padded = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    mask = shifted_window_mask(hp, wp, 7, shift)
    with torch.no_grad():
        out = attn(x.reshape(2, h * w, 8), (h, w), shift, mask)
        exp = attn(padded.reshape(2, hp * wp, 8), (hp, wp), shift, mask)
    torch.testing.assert_close(out.view(2, h, w, 8), exp.view(2, hp, wp, 8)[:, :h, :w],
                               rtol=0, atol=1e-6)


def test_shifted_window_mask_equals_the_official_slice_construction():
    """The vectorised mask against the official nested-slice loop (label 9 regions, windows,
    pairwise differences -> -100), for a square shift and a W-only shift."""
    ws = 7
    for shift in ((3, 3), (0, 3)):
        img = torch.zeros(1, 14, 21, 1)
        cnt = 0
        h_slices = (slice(0, -ws), slice(-ws, -shift[0]), slice(-shift[0], None)) \
            if shift[0] else (slice(None),)
        for hs in h_slices:
            for ws_ in (slice(0, -ws), slice(-ws, -shift[1]), slice(-shift[1], None)):
                img[:, hs, ws_, :] = cnt
                cnt += 1
        windows = img.view(1, 2, ws, 3, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
        diff = windows.unsqueeze(1) - windows.unsqueeze(2)
        expected = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
        torch.testing.assert_close(shifted_window_mask(14, 21, ws, shift), expected,
                                   rtol=0, atol=0)


def test_relative_position_index_is_the_official_one():
    """Official: coords (2, N) -> pairwise difference + (ws - 1), row offset times (2 ws - 1).
    Hand-checked entries for ws = 2: token 0 (0,0) vs 3 (1,1) is offset (-1,-1) -> 0; 3 vs 0 is
    (1,1) -> 2 * 3 + 2 = 8; the diagonal is (0,0) -> 4."""
    index = relative_position_index(2)
    assert index.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    timm_index = timm.models.swin_transformer.get_relative_position_index(7, 7)
    assert torch.equal(relative_position_index(7), timm_index)


def test_shift_rule_per_side():
    model = SwinTransformer(arch=TINY)
    assert model.stages[0].shift_size((8, 8)) == (3, 3)
    assert model.stages[0].shift_size((7, 14)) == (0, 3)
    assert model.stages[0].shift_size((5, 5)) == (0, 0)
    assert SwinTransformer(arch=TINY, always_partition=True).stages[0].shift_size((5, 5)) == \
        (3, 3)


def test_patch_merging_channel_order_reorder_formula():
    """ANCHORS.md 1.4's re-order of timm / official PatchMerging weights into mmcv's
    ``nn.Unfold`` PatchMerging gives the same output (odd 5 x 7 map: both pad bottom-right)."""
    torch.manual_seed(0)
    ref = _perturb_(timm.models.swin_transformer.PatchMerging(8)).eval()
    ours = PatchMerging(8, 16, dict(type='LN')).eval()
    w = ref.reduction.weight
    ours.reduction.weight.data = w.reshape(16, 4, 8)[:, [0, 2, 1, 3], :].transpose(1, 2) \
        .reshape(16, 32)
    for name in ('weight', 'bias'):
        getattr(ours.norm, name).data = getattr(ref.norm, name).reshape(4, 8)[[0, 2, 1, 3]] \
            .transpose(0, 1).reshape(32)
    x = torch.randn(2, 5, 7, 8)
    with torch.no_grad():
        out, hw = ours(x.reshape(2, 35, 8), (5, 7))
        exp = ref(x)
    assert tuple(hw) == (3, 4)
    torch.testing.assert_close(out.view(2, 3, 4, 16), exp, rtol=0, atol=1e-6)
    # without the re-order the channels mix up (the conversion is not a no-op)
    ours.reduction.weight.data = w.clone()
    with torch.no_grad():
        assert (ours(x.reshape(2, 35, 8), (5, 7))[0].view(2, 3, 4, 16) - exp).abs().max() > 1e-2


@pytest.mark.parametrize('hw', [(6, 8), (5, 7)])
def test_patch_merging_equals_mmcv_with_the_same_weights(hw):
    """Ours gathers offset-major and permutes its parameters instead of mmcv's ``nn.Unfold``:
    same state dict, same output and input gradient, at an even and an odd map size."""
    from mmcv.cnn.bricks.transformer import PatchMerging as MMCVPatchMerging
    torch.manual_seed(0)
    ref = _perturb_(MMCVPatchMerging(8, 16, kernel_size=2, stride=2, padding='corner',
                                     bias=False))
    ours = PatchMerging(8, 16, dict(type='LN'))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, hw[0] * hw[1], 8)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    exp, exp_hw = ref(x_ref, hw)
    out, out_hw = ours(x_ours, hw)
    assert tuple(out_hw) == tuple(exp_hw) == ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
    torch.testing.assert_close(out, exp, rtol=0, atol=1e-6)
    out.square().sum().backward()
    exp.square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-5)
    ours_params, ref_params = dict(ours.named_parameters()), dict(ref.named_parameters())
    assert set(ours_params) == set(ref_params) == {'norm.weight', 'norm.bias', 'reduction.weight'}
    for name, param in ours_params.items():
        torch.testing.assert_close(param.grad, ref_params[name].grad, rtol=0, atol=1e-5)


# -------------------------------------------------------------------------- checkpoint formats

@pytest.fixture(scope='module')
def timm_tiny_state_dict():
    torch.manual_seed(0)
    ref = _perturb_(timm.create_model('swin_tiny_patch4_window7_224', pretrained=False,
                                      **TIMM_TINY))
    return ref.state_dict()


def _reference_model(timm_sd) -> SwinTransformer:
    model = SwinTransformer(arch=TINY, drop_path_rate=0.)
    model.load_pretrained(timm_sd)  # norm3 <- timm's final norm
    _randomise_out_norms_(model, (0, 1, 2))
    return model


@pytest.mark.parametrize('fmt', ['official', 'timm', 'mmdet'])
@pytest.mark.parametrize('explicit', [False, True])
def test_each_checkpoint_format_loads_to_the_same_weights(fmt, explicit, timm_tiny_state_dict,
                                                          tmp_path):
    ref = _reference_model(timm_tiny_state_dict)
    norms = {f'norm{i}.{p}': getattr(ref, f'norm{i}').state_dict()[p]
             for i in range(4) for p in ('weight', 'bias')}
    official = timm_to_official(timm_tiny_state_dict, TINY['depths'])
    sd = {'timm': dict(timm_tiny_state_dict), 'official': official,
          'mmdet': official_to_mmdet(official)}[fmt]
    sd.update({k: v for k, v in norms.items() if fmt == 'mmdet' or not k.startswith('norm3')})
    path = tmp_path / f'{fmt}.pth'
    torch.save(dict(state_dict=sd), path)  # the usual {'state_dict': ...} wrapper
    assert detect_checkpoint_format(sd) == fmt

    model = SwinTransformer(arch=TINY, drop_path_rate=0.,
                            checkpoint_format=fmt if explicit else None)
    report = model.load_pretrained(str(path))
    head = {'timm': ['head.fc.weight', 'head.fc.bias'], 'official': ['head.weight', 'head.bias'],
            'mmdet': []}[fmt]
    assert report == dict(missing=[], unexpected=head, mismatched=[])
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    if fmt == 'mmdet':  # one forward: the converted model computes what the reference does
        x = _image(64, 96)
        with torch.no_grad():
            for out, exp in zip(model.eval()(x), ref.eval()(x)):
                torch.testing.assert_close(out, exp, rtol=0, atol=0)


def test_prefix_map_and_a_wrong_explicit_format_is_reported(timm_tiny_state_dict):
    official = timm_to_official(timm_tiny_state_dict, TINY['depths'])
    detector = {f'backbone.{k}': v for k, v in official.items()}
    with pytest.raises(ValueError, match="prefix_map.*'backbone.'"):
        SwinTransformer(arch=TINY).load_pretrained(detector)
    report = SwinTransformer(arch=TINY).load_pretrained(detector, {'backbone.': ''})
    assert report['unexpected'] == ['head.weight', 'head.bias'] and not report['mismatched']
    # official keys read as timm: every downsample lands one stage early -> not silent
    report = SwinTransformer(arch=TINY, checkpoint_format='timm').load_pretrained(official)
    assert 'stages.-1.downsample.reduction.weight' in report['unexpected']
    assert 'stages.2.downsample.reduction.weight' in report['missing']
    assert report['mismatched']  # stage 1's merging loaded into stage 0: other widths


def test_converter_drops_derived_buffers_and_maps_the_final_norm():
    sd = {'layers.0.blocks.0.attn.relative_position_index': torch.zeros(49, 49),
          'layers.0.blocks.1.attn_mask': torch.zeros(4, 49, 49),
          'layers.0.downsample.norm.bias': torch.arange(8.),
          'norm.weight': torch.ones(4)}
    out, fmt, dropped = convert_swin_state_dict(sd, None, num_stages=4)
    assert fmt == 'official' and len(dropped) == 2
    # (x0 x0 | x1 x1 | x2 x2 | x3 x3) for C = 2 -> channel-major, unfold order x0 x2 x1 x3
    assert out['stages.0.downsample.norm.bias'].tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    assert set(out) == {'stages.0.downsample.norm.bias', 'norm3.weight'}
    with pytest.raises(ValueError, match='checkpoint_format must be one of'):
        convert_swin_state_dict(sd, 'hf')


# ------------------------------------------------------------------------ counts and arguments

def test_swin_t_parameter_count_matches_timm_and_anchors():
    """ANCHORS.md 1.4: Swin-T 28.29M with its 1000-class head. Ours = timm's classifier minus
    the head and the final norm, plus the four output norms."""
    model = SwinTransformer(arch='T')
    ours = sum(p.numel() for p in model.parameters())
    ref = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False)
    timm_count = sum(p.numel() for p in ref.parameters())
    head, final_norm, out_norms = 768 * 1000 + 1000, 2 * 768, 2 * (96 + 192 + 384 + 768)
    assert ours == 27_520_698
    assert ours + head + final_norm - out_norms == timm_count == 28_288_354
    assert round(timm_count / 1e6, 2) == 28.29


@pytest.mark.parametrize('arch,millions', [('S', 49.61), ('B', 87.77), ('L', 196.53)])
def test_larger_arch_parameter_counts(arch, millions):
    with torch.device('meta'):  # no memory, no initialisation cost
        model = SwinTransformer(arch=arch)
    c = model.out_channels[-1]
    count = sum(p.numel() for p in model.parameters()) + c * 1000 + 1000 + 2 * c \
        - 2 * sum(model.out_channels)
    assert round(count / 1e6, 2) == millions


def test_stochastic_depth_is_linear_over_blocks():
    model = SwinTransformer(arch=TINY, drop_path_rate=0.35)
    blocks = [b for stage in model.stages for b in stage.blocks]
    expected = [0.35 * k / 7 for k in range(8)]
    assert [b.drop_path.drop_prob for b in blocks] == pytest.approx(expected)
    assert [b.ffn.dropout_layer.drop_prob for b in blocks] == pytest.approx(expected)
    x = _image(64, 64, batch=4)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x)[-1], model(x)[-1])  # branches dropped at random
        model.eval()
        assert torch.equal(model(x)[-1], model(x)[-1])


def test_with_cp_checkpoints_every_block_and_keeps_gradients(monkeypatch):
    calls = []
    real = swin_module.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(swin_module, 'checkpoint', counting)
    x = _image(64, 96, batch=2)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = SwinTransformer(arch=TINY, drop_path_rate=0., with_cp=with_cp).train()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert len(calls) == sum(TINY['depths'])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_frozen_stages_freeze_patch_embed_stages_and_their_norms():
    model = SwinTransformer(arch=TINY, frozen_stages=2, drop_path_rate=0.2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = {n for n, _ in model.named_parameters()
                if n.startswith(('patch_embed.', 'stages.0.', 'stages.1.', 'norm0.', 'norm1.'))}
    assert frozen == expected and 'stages.1.downsample.reduction.weight' in frozen
    model.train()
    assert not model.stages[1].training and not model.stages[1].blocks[1].drop_path.training
    assert model.stages[2].training and model.norm2.training
    sum(o.mean() for o in model(_image(64, 64))).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert model.stages[2].blocks[0].attn.w_msa.qkv.weight.grad is not None
    assert all(p.requires_grad for p in SwinTransformer(arch=TINY).parameters())


def test_norm_eval_leaves_dropout_and_drop_path_training():
    """Swin has no BatchNorm: ``norm_eval`` must not put anything else in eval mode."""
    model = SwinTransformer(arch=TINY, norm_eval=True, drop_rate=0.1, drop_path_rate=0.1).train()
    assert all(m.training for m in model.modules())


def test_any_size_channels_last_and_declared_strides():
    model = SwinTransformer(arch=TINY, out_indices=(1, 3)).eval()
    assert model.out_channels == (32, 128) and model.strides == (8, 32)
    assert model.size_divisor == 1
    x = _image(33, 70, batch=2)
    with torch.no_grad():
        outs = model(x)
        outs_cl = model(x.contiguous(memory_format=torch.channels_last))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 5, 9), (2, 128, 2, 3)]
    for a, b in zip(outs, outs_cl):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not hasattr(model, 'norm0')  # only the returned stages have output norms


@pytest.mark.parametrize('kwargs,message', [
    (dict(arch='X'), r"arch must be one of \['B', 'L', 'S', 'T'\]"),
    (dict(arch=dict(embed_dims=16, depths=(2,))), 'needs exactly the keys'),
    (dict(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(1,))), 'one entry per stage'),
    (dict(arch=dict(embed_dims=18, depths=(2,), num_heads=(4,)), out_indices=(0,)),
     'embed_dims 18 is not divisible by num_heads 4'),
    (dict(out_indices=(2, 4)), r'out_indices must be ascending indices in 0\.\.3'),
    (dict(frozen_stages=5), r'frozen_stages must be in -1\.\.4'),
    (dict(checkpoint_format='hf'), 'checkpoint_format must be one of'),
    (dict(norm_cfg=dict(type='BN')), 'token sequences take'),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\)'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwinTransformer(**kwargs)


def test_non_image_input_is_refused():
    with pytest.raises(ValueError, match=r'takes \(B, C, H, W\) images, got shape \(3, 32, 32\)'):
        SwinTransformer(arch=TINY)(torch.zeros(3, 32, 32))


def test_bccd_config_builds_and_runs():
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'retinanet_swin-t_fpn_320_bccd.py'))
    backbone = MODELS.build(cfg.model.backbone)
    assert isinstance(backbone, SwinTransformer) and backbone.arch['embed_dims'] == 96
    assert list(backbone.out_channels) == list(cfg.model.neck.in_channels)
    assert list(backbone.strides) == list(cfg.model.neck.in_strides)
    detector = MODELS.build(cfg.model)
    with torch.no_grad():
        feats = detector.extract_feat(_image(320, 320))
    assert [tuple(f.shape[-2:]) for f in feats] == [(40, 40), (20, 20), (10, 10), (5, 5)]
