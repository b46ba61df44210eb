"""UNETR = ViT backbone + UNETRHead: parameter counts (ANCHORS.md 3.5) and numerical parity with
``monai.networks.nets.UNETR`` (same random weights through ``convert_monai_unetr_state_dict``)."""
from __future__ import annotations

import pytest
import torch
from mmengine.structures import PixelData
from torch import nn

from toolbox.registry import MODELS
from toolbox.structures import DataSample

import monai.networks.nets as monai_nets  # noqa: E402  (pinned in requirements/tests.txt)
from toolbox_plugins.decode_heads.unetr_head import convert_monai_unetr_state_dict  # noqa: E402

PAPER_PARAMS = 92_784_046  # ANCHORS.md 3.5, MONAI code without the unused cross-attention norms
MONAI_161_PARAMS = 92_802_478  # MONAI 1.6.1 builds norm_cross_attn (2 x 768) in each of 12 blocks


def build_pair(in_channels=1, num_classes=3, img_size=32, feature_size=8, hidden_size=96,
               mlp_dim=192, num_heads=4, proj_type='conv', norm='instance', res_block=True,
               conv_block=True, spatial_dims=3, qkv_bias=False):
    """(MONAI UNETR, our ViT, our UNETRHead), same configuration, our weights not loaded."""
    reference = monai_nets.UNETR(
        in_channels, num_classes, img_size, feature_size=feature_size, hidden_size=hidden_size,
        mlp_dim=mlp_dim, num_heads=num_heads, proj_type=proj_type, norm_name=norm,
        conv_block=conv_block, res_block=res_block, spatial_dims=spatial_dims,
        qkv_bias=qkv_bias)
    backbone = MODELS.build(dict(
        type='ViT', in_channels=in_channels, img_size=img_size, hidden_size=hidden_size,
        mlp_dim=mlp_dim, num_heads=num_heads, proj_type=proj_type, spatial_dims=spatial_dims,
        qkv_bias=qkv_bias))
    head = MODELS.build(dict(
        type='UNETRHead', in_channels=hidden_size, num_classes=num_classes,
        input_channels=in_channels, feature_size=feature_size,
        norm_cfg=dict(type='IN' if norm == 'instance' else 'BN'), res_block=res_block,
        conv_block=conv_block, spatial_dims=spatial_dims))
    return reference, backbone, head


def load_monai(reference: nn.Module, backbone: nn.Module, head: nn.Module) -> None:
    """Copy MONAI's weights into ours (strict: every key on both sides)."""
    converted = convert_monai_unetr_state_dict(reference.state_dict())
    for prefix, module in (('backbone.', backbone), ('decode_head.', head)):
        part = {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}
        module.load_state_dict(part, strict=True)
    assert all(k.startswith(('backbone.', 'decode_head.')) for k in converted)


def num_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# ---------------------------------------------------------------------------- parameter count

def test_paper_configuration_parameter_count():
    """in 1, out 14, 96^3, patch 16, f 16, hidden 768, mlp 3072, 12 heads / layers, instance
    norm, residual blocks: 92,784,046 for both patch projections; MONAI 1.6.1 counts its unused
    ``norm_cross_attn`` LayerNorms on top, exactly the difference."""
    paper = dict(in_channels=1, num_classes=14, img_size=96, feature_size=16, hidden_size=768,
                 mlp_dim=3072, num_heads=12)
    reference, backbone, head = build_pair(**paper, proj_type='conv')
    assert num_params(backbone, head) == PAPER_PARAMS
    assert num_params(reference) == MONAI_161_PARAMS
    unused = sum(p.numel() for k, p in reference.named_parameters() if 'cross_attn' in k)
    assert unused == 12 * 2 * 768 == MONAI_161_PARAMS - PAPER_PARAMS
    assert len(convert_monai_unetr_state_dict(reference.state_dict())) == \
        len(backbone.state_dict()) + len(head.state_dict())
    del reference
    # the paper's pos_embed='perceptron' (a Linear on 16^3-voxel patches): the same count
    _, backbone, head = build_pair(**paper, proj_type='perceptron')
    assert num_params(backbone, head) == PAPER_PARAMS
    assert backbone.patch_embed.projection.weight.shape == (768, 4096)


# ----------------------------------------------------------------------------------- parity

PARITY_CASES = {
    '3d-conv-instance-res': dict(spatial_dims=3),
    '3d-perceptron-batch-qkvbias': dict(spatial_dims=3, proj_type='perceptron', norm='batch',
                                        qkv_bias=True, in_channels=2),
    '3d-conv-batch-basic-noconvblock': dict(spatial_dims=3, norm='batch', res_block=False,
                                            conv_block=False),
    '2d-conv-instance-res': dict(spatial_dims=2, img_size=48, in_channels=3),
    '2d-perceptron-batch-res': dict(spatial_dims=2, img_size=(32, 48), proj_type='perceptron',
                                    norm='batch', in_channels=3),
    '2d-conv-instance-basic': dict(spatial_dims=2, img_size=32, res_block=False),
}


def _randomise_batch_norms(model: nn.Module, generator: torch.Generator) -> None:
    """BatchNorm affine parameters and running statistics away from their 1 / 0 defaults, so
    that eval-mode parity checks their mapping too."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.weight.data = 1 + 0.2 * torch.randn(c, generator=generator)
            m.bias.data = 0.2 * torch.randn(c, generator=generator)
            m.running_mean = 0.2 * torch.randn(c, generator=generator)
            m.running_var = 0.5 + torch.rand(c, generator=generator)


@pytest.mark.parametrize('case', list(PARITY_CASES))
def test_output_equals_monai_unetr(case):
    """MONAI's random weights copied into ours: equal logits (eval mode) within 1e-4."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    reference, backbone, head = build_pair(**PARITY_CASES[case])
    _randomise_batch_norms(reference, g)
    load_monai(reference, backbone, head)
    for m in (reference, backbone, head):
        m.eval()
    x = torch.randn(2, backbone.in_channels, *backbone.img_size, generator=g)
    with torch.no_grad():
        expected = reference(x)
        got = head.forward(backbone(x), inputs=x)
    assert got.shape == expected.shape == (2, head.num_classes, *backbone.img_size)
    error = (got - expected).abs().max().item()
    assert error < 1e-4, f'{case}: max abs difference {error:.3g}'


def test_output_equals_monai_unetr_at_paper_width():
    """hidden 768, mlp 3072, 12 heads, 12 layers, feature size 16 (the paper's widths) on a
    32^3 volume (8 tokens), to keep the test fast."""
    torch.manual_seed(0)
    reference, backbone, head = build_pair(in_channels=1, num_classes=14, img_size=32,
                                           feature_size=16, hidden_size=768, mlp_dim=3072,
                                           num_heads=12)
    load_monai(reference, backbone, head)
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.eval()(x)
        got = head.eval()(backbone.eval()(x), inputs=x)
    error = (got - expected).abs().max().item()
    assert error < 1e-4, f'max abs difference {error:.3g}'


def test_head_initialises_like_monai():
    """Every conv of the decoder, the classifier included, starts from PyTorch's default
    (MONAI's UNETR): per-layer weight std within 15 % of MONAI's, and a classifier far from the
    small-normal std 0.01 that kept Hippocampus foreground Dice at 0 for 80+ iterations."""
    torch.manual_seed(0)
    reference, _, head = build_pair(feature_size=16, hidden_size=96)
    converted = convert_monai_unetr_state_dict(reference.state_dict())
    ours = head.state_dict()
    checked = 0
    for key, ref in converted.items():
        name = key[len('decode_head.'):]
        if key.startswith('decode_head.') and name.endswith('weight') and ref.numel() >= 1000:
            assert ours[name].std() == pytest.approx(ref.std().item(), rel=0.15), name
            checked += 1
    assert checked >= 20
    bound = 1 / head.conv_seg.weight.shape[1] ** 0.5  # 48 weights: too few for a std check
    assert head.conv_seg.weight.abs().max() <= bound
    assert head.conv_seg.weight.std() > 0.05


def test_converter_drops_cross_attention_and_rejects_unknown_keys():
    reference, backbone, head = build_pair(spatial_dims=2, img_size=32)
    state = reference.state_dict()
    converted = convert_monai_unetr_state_dict(state)
    dropped = [k for k in state if 'cross_attn' in k]
    assert len(dropped) == 2 * 12  # norm_cross_attn.{weight, bias} per block
    assert len(converted) == len(state) - len(dropped)
    assert converted['decode_head.conv_seg.bias'] is state['out.conv.conv.bias']
    with pytest.raises(KeyError, match='vit.extra.weight'):
        convert_monai_unetr_state_dict({'vit.extra.weight': torch.zeros(1)})


# -------------------------------------------------------------------------------- backbone

def test_vit_rejects_another_input_size():
    vit = MODELS.build(dict(type='ViT', in_channels=1, img_size=32, hidden_size=32,
                            mlp_dim=32, num_layers=1, num_heads=2, out_indices=(1,)))
    with pytest.raises(ValueError, match=r'expects input \(B, 1, \*\(32, 32, 32\)\).*'
                                         r'got \(1, 1, 48, 32, 32\)'):
        vit(torch.zeros(1, 1, 48, 32, 32))
    with pytest.raises(ValueError, match=r'got \(1, 2, 32, 32, 32\)'):
        vit(torch.zeros(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match=r'got \(1, 1, 32, 32\)'):
        vit(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match='multiple of patch_size'):
        MODELS.build(dict(type='ViT', in_channels=1, img_size=40, num_layers=1))
    with pytest.raises(ValueError, match='out_indices'):
        MODELS.build(dict(type='ViT', in_channels=1, img_size=32, num_layers=2,
                          out_indices=(1, 3)))


@pytest.mark.parametrize('spatial_dims, img_size, patch_size, out_indices', [
    (3, 32, 16, (4, 7, 10, 12)),
    (3, (32, 16, 48), 16, (0, 12)),
    (3, 64, 16, (6, 12)),
    (2, (32, 64), (16, 8), (1, 2, 12)),
])
def test_vit_declared_channels_and_strides(spatial_dims, img_size, patch_size, out_indices):
    vit = MODELS.build(dict(type='ViT', in_channels=2, img_size=img_size,
                            patch_size=patch_size, hidden_size=24, mlp_dim=48, num_heads=2,
                            spatial_dims=spatial_dims, out_indices=out_indices))
    x = torch.randn(1, 2, *vit.img_size)
    outs = vit(x)
    assert len(outs) == len(vit.out_channels) == len(vit.strides) == len(out_indices)
    for out, c, s in zip(outs, vit.out_channels, vit.strides):
        strides = (s,) * spatial_dims if isinstance(s, int) else s
        assert out.shape == (1, c, *(n // k for n, k in zip(vit.img_size, strides)))
        assert out.is_contiguous()  # not the channels-last view of the tokens
    # only the last block's map is normalised: its tokens have zero mean over channels
    assert outs[-1].mean(1).abs().max() < 1e-5
    assert outs[0].mean(1).abs().max() > 1e-3


def test_vit_frozen_stages():
    vit = MODELS.build(dict(type='ViT', in_channels=1, img_size=32, hidden_size=16,
                            mlp_dim=16, num_layers=3, num_heads=2, out_indices=(3,),
                            frozen_stages=2))
    frozen = {n for n, p in vit.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in vit.named_parameters()
                      if n.startswith(('patch_embed.', 'blocks.0.', 'blocks.1.'))}
    assert 'patch_embed.pos_embed' in frozen


# ------------------------------------------------------------------------------------ head

def test_head_rejects_an_input_that_does_not_match_the_grid():
    _, backbone, head = build_pair(spatial_dims=2, img_size=32)
    x = torch.randn(1, 1, 32, 32)
    with pytest.raises(ValueError, match=r'16 x the ViT grid \(2, 2\) = \(32, 32\)'):
        head(backbone(x), inputs=torch.randn(1, 1, 48, 32))
    with pytest.raises(ValueError, match='pass inputs='):
        head(backbone(x))


def test_patch_8_head_drops_one_level():
    """patch 8 -> three CNN levels: encoder2 = init + 1 block (S/2), encoder3 = init only (S/4),
    decoder4 reads the ViT map; the parameter count is the patch-16 head's minus encoder4,
    decoder5, encoder2's second block and encoder3's block, with decoder4's transposed conv
    taking the hidden width (hidden -> 4f, 2^3 taps) instead of 8f -> 4f."""
    hidden, f = 48, 8
    common = dict(type='UNETRHead', in_channels=hidden, num_classes=3, input_channels=1,
                  feature_size=f, spatial_dims=3)
    head16 = MODELS.build(common)
    head8 = MODELS.build(dict(common, patch_size=8))
    dropped = num_params(head16.encoder4, head16.decoder5, head16.encoder2.blocks[1],
                         head16.encoder3.blocks[0], head16.decoder4.transp_conv)
    assert num_params(head8) == num_params(head16) - dropped + hidden * 4 * f * 8
    assert not hasattr(head8, 'encoder4') and not hasattr(head8, 'decoder5')
    assert head8.in_index == (0, 1, 2)

    torch.manual_seed(0)
    backbone = MODELS.build(dict(type='ViT', in_channels=1, img_size=(16, 24, 16), patch_size=8,
                                 hidden_size=hidden, mlp_dim=96, num_heads=4,
                                 out_indices=(4, 8, 12)))
    x = torch.randn(2, 1, 16, 24, 16)
    feats = backbone(x)
    assert head8.encoder2(feats[0]).shape == (2, 2 * f, 8, 12, 8)
    assert head8.encoder3(feats[1]).shape == (2, 4 * f, 4, 6, 4)
    logits = head8(feats, inputs=x)
    assert logits.shape == (2, 3, 16, 24, 16)
    logits.square().mean().backward()
    assert [n for n, p in head8.named_parameters() if p.grad is None] == []
    with pytest.raises(ValueError, match='8 x the ViT grid'):
        head8(feats, inputs=torch.randn(2, 1, 32, 48, 32))
    with pytest.raises(ValueError, match='power of two'):
        MODELS.build(dict(common, patch_size=12))
    with pytest.raises(ValueError, match='needs 3 entries'):
        MODELS.build(dict(common, patch_size=8, in_index=(0, 1, 2, 3)))


def test_segmentor_trains_and_predicts_2d():
    """EncoderDecoder passes inputs= to the head: a finite loss with gradients everywhere, and
    ``'tensor'`` mode equal to backbone + head."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='ViT', in_channels=3, img_size=32, spatial_dims=2, hidden_size=32,
                      mlp_dim=64, num_heads=2),
        decode_head=dict(type='UNETRHead', in_channels=32, num_classes=4, input_channels=3,
                         feature_size=8, spatial_dims=2)))
    x = torch.randn(2, 3, 32, 32)
    samples = []
    for _ in range(2):
        sample = DataSample(metainfo=dict(img_shape=(32, 32), ori_shape=(32, 32),
                                          batch_input_shape=(32, 32)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 32, 32)))
        samples.append(sample)
    model.train()
    losses = model(x, samples, mode='loss')
    assert torch.isfinite(losses['loss_ce'])
    losses['loss_ce'].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    model.eval()
    with torch.no_grad():
        logits = model(x, mode='tensor')
        expected = model.decode_head(model.backbone(x), inputs=x)
    assert logits.shape == (2, 4, 32, 32)
    assert torch.equal(logits, expected)
