"""SpineNet backbones and the RetinaNet head with shared convs and per-level BN: parameter counts of
reference/ANCHORS.md 1.3 (counted on the meta device, so SpineNet-190 costs nothing), output
shapes and strides of every variant, the block specification, resampling and merging rules,
stochastic depth, and the BCCD / COCO recipes."""
import math

import pytest
import torch
from mmengine.structures import InstanceData
from torch import nn
from torch.nn import functional as F

from toolbox.engine import load_config
from toolbox.registry import MODELS
from toolbox.structures import DataSample
from toolbox_plugins.backbones.spinenet import (ARCH_SETTINGS, BLOCK_SPECS, NUM_STEM_BLOCKS,
                                                Resample, SpineNet)

from .conftest import REPO_ROOT
from .helpers import n_params

TINY = dict(endpoints_num_filters=16, filter_size_scale=0.25, resample_alpha=0.5, block_repeats=1)
HEAD = dict(type='RetinaSepBNHead', num_levels=5,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=3,
                                  scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16, 32, 64, 128]))

# reference/spinenet_count.py (the TF architecture rebuilt layer by layer), exact integers:
# backbone alone, and with the TF RetinaNet head (91 classes, 9 anchors, biased 3x3 convs shared
# across levels, BN per level; 4 convs of 256, 49S 128 filters, 190 7 convs of 512).
COMPUTED = {'49S': (9_089_215, 11_265_942), '49': (21_831_488, 28_543_383),
            '96': (36_262_976, 42_974_871), '143': (60_247_616, 66_959_511),
            '190': (126_587_664, 163_637_351)}
PUBLISHED = {'49S': 11.9e6, '49': 28.5e6, '96': 43.0e6, '143': 67.0e6, '190': 163.6e6}
HEAD_SETTINGS = {'49S': (128, 128, 4), '49': (256, 256, 4), '96': (256, 256, 4),
                 '143': (256, 256, 4), '190': (512, 512, 7)}  # in_channels, filters, convs


def meta_model(arch, num_classes=91):
    in_ch, filters, convs = HEAD_SETTINGS[arch]
    with torch.device('meta'):
        backbone = SpineNet(arch=arch)
        head = MODELS.build(dict(HEAD, num_classes=num_classes, in_channels=in_ch,
                                 feat_channels=filters, stacked_convs=convs))
    return backbone, head


# -------------------------------------------------------------------------- parameter counts

@pytest.mark.parametrize('arch', ['49S', '49', '96', '143', '190'])
def test_parameter_counts_equal_the_tf_architecture(arch):
    backbone, head = meta_model(arch)
    total = n_params(backbone) + n_params(head)
    assert (n_params(backbone), total) == COMPUTED[arch]
    if arch != '49S':  # published model-zoo counts: 28.5 / 43.0 / 67.0 / 163.6M
        assert abs(total / PUBLISHED[arch] - 1) < 0.005


def test_spinenet_49s_against_published_and_computed_counts():
    """49S: 11,265,942 = 11.27M computed (exact), 5.3 % below the 11.9M of the TF model zoo
    (the paper says 12.0M). Explanations that do not close the gap, checked here: counting BN
    moving statistics (+67k, and 49 would then miss its 28.5M), a 256-filter head (15.2M),
    80 instead of 91 classes (11.15M, yan-roo's measurement). What remains is a different 49S
    definition in the published count (a filter scale of ~0.675 instead of 0.65 would give it),
    which no public code shows; the backbone follows the published SCALING_MAP."""
    backbone, head = meta_model('49S')
    total = n_params(backbone) + n_params(head)
    assert total == 11_265_942
    assert total / PUBLISHED['49S'] - 1 == pytest.approx(-0.0533, abs=1e-3)
    stats = sum(b.numel() for m in (backbone, head) for k, b in m.named_buffers()
                if k.endswith(('running_mean', 'running_var')))
    assert total + stats == 11_333_318  # still 4.8 % short
    with torch.device('meta'):
        wide_head = MODELS.build(dict(HEAD, num_classes=91, in_channels=128, feat_channels=256,
                                      stacked_convs=4))
    assert n_params(backbone) + n_params(wide_head) == 15_211_286
    assert n_params(backbone) + n_params(meta_model('49S', num_classes=80)[1]) == 11_151_795


def test_coco_recipes_have_the_published_architecture():
    """The COCO recipes (80 classes, SyncBN) equal the TF count less 11 classes' classifier."""
    for name, arch, expected in (('retinanet_spinenet-49_640_coco', '49', 28_315_188),
                                 ('retinanet_spinenet-49s_640_coco', '49S', 11_151_795)):
        cfg = load_config(str(REPO_ROOT / f'configs/{name}.py'))
        with torch.device('meta'):
            model = MODELS.build(cfg.model)
        assert model.backbone.arch == ARCH_SETTINGS[arch]
        assert n_params(model) == expected
        bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert {(type(m).__name__, m.momentum, m.eps) for m in bn} == \
            {('SyncBatchNorm', 0.01, 1e-3)}


# ------------------------------------------------------------------- block table and shapes

def test_block_specification_table():
    assert len(BLOCK_SPECS) == NUM_STEM_BLOCKS + 15
    assert all(spec[:3] == (2, 'bottleneck', None) for spec in BLOCK_SPECS[:NUM_STEM_BLOCKS])
    for i, (level, block, parents, is_output) in enumerate(BLOCK_SPECS[NUM_STEM_BLOCKS:]):
        assert len(parents) == 2 and all(0 <= p < NUM_STEM_BLOCKS + i for p in parents)
        assert is_output == (i >= 10)  # the last five blocks are the outputs
    assert [s[0] for s in BLOCK_SPECS[-5:]] == [4, 3, 5, 7, 6]


@pytest.mark.parametrize('arch', ['49S', '49', '96', '143', '143L', '190'])
@pytest.mark.parametrize('size', [(640, 640), (640, 480), (100, 132)])
def test_output_shapes_and_strides_of_every_variant(arch, size):
    with torch.device('meta'):
        model = SpineNet(arch=arch)
        outs = model(torch.empty(2, 3, *size))
    channels = ARCH_SETTINGS[arch]['endpoints_num_filters']
    assert model.out_channels == (channels,) * 5 and model.strides == (8, 16, 32, 64, 128)
    assert [tuple(o.shape) for o in outs] == [
        (2, channels, math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in model.strides]


def test_meta_shapes_equal_a_real_forward_and_out_indices_select_levels():
    torch.manual_seed(0)
    model = SpineNet(arch=TINY, out_indices=(1, 3)).eval()
    x = torch.randn(1, 3, 100, 132)
    with torch.no_grad():
        outs = model(x)
    assert model.strides == (16, 64) and model.out_channels == (16, 16)
    assert [tuple(o.shape) for o in outs] == [(1, 16, 7, 9), (1, 16, 2, 3)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_every_block_feeds_an_output_and_gets_a_gradient():
    torch.manual_seed(0)
    model = SpineNet(arch=TINY, drop_path_rate=0.0).train()
    sum(o.mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


# ------------------------------------------------------------------------ resampling, merge

def test_resampling_widths_follow_alpha_and_block_types():
    with torch.device('meta'):
        model, model_143 = SpineNet(arch='49'), SpineNet(arch='143')
    # block 3 (level 4 residual) reads the two level-2 stem bottlenecks (256 channels): 1x1 to
    # int(256 / 4 * 0.5) = 32, 3x3 s2, one max-pool (2 -> 4 is a factor 4), 1x1 to 256
    down = model.resamples[1][0]
    assert (down.reduce.conv.in_channels, down.reduce.conv.out_channels) == (256, 32)
    assert down.down.conv.stride == (2, 2) and len(down.pools) == 1
    assert down.expand.conv.out_channels == 256 and not down.expand.with_activation
    # block 4 (level 3 bottleneck) reads block 3 (level 4 residual, 256): 1x1 to
    # int(256 * 0.5) = 128, nearest up, 1x1 to 4 * 128 = 512
    up = model.resamples[2][1]
    assert (up.reduce.conv.out_channels, up.down, len(up.pools)) == (128, None, 0)
    assert up.expand.conv.out_channels == 512
    # 143 has alpha 1.0: the same connection narrows to 64 channels
    assert model_143.resamples[1][0].reduce.conv.out_channels == 64


def test_resample_numbers_up_and_down():
    """With the 1x1 convs replaced by identities: going up is nearest repetition; going down by 4
    is a 3x3 stride-2 conv then a 3x3 stride-2 max-pool (pad 1). Hand-computed on a ramp."""
    up = Resample(1, 1, 1, in_level=5, out_level=3, norm_cfg=dict(type='BN'),
                  act_cfg=dict(type='ReLU'))
    up.reduce, up.expand = nn.Identity(), nn.Identity()
    x = torch.arange(6.).view(1, 1, 2, 3)
    assert torch.equal(up(x, (8, 12)), x.repeat_interleave(4, 2).repeat_interleave(4, 3))
    # a non-multiple target size: nearest resize to it
    assert up(x, (7, 10)).shape == (1, 1, 7, 10)

    down = Resample(1, 1, 1, in_level=3, out_level=5, norm_cfg=dict(type='BN'),
                    act_cfg=dict(type='ReLU')).eval()
    down.reduce, down.expand = nn.Identity(), nn.Identity()
    with torch.no_grad():
        down.down.conv.weight.zero_()
        down.down.conv.weight[0, 0, 1, 1] = 1.0  # centre tap: stride-2 subsampling
    x = torch.arange(64.).view(1, 1, 8, 8)
    # conv s2 keeps x[2i, 2j] (4x4); max-pool 3 s2 pad 1 on that increasing ramp keeps the
    # bottom-right of each window: x[4i + 2, 4j + 2]
    expected = torch.tensor([[[[18., 22.], [50., 54.]]]])
    with torch.no_grad():  # the eval-mode BN divides by sqrt(1 + eps)
        torch.testing.assert_close(down(x, (2, 2)), expected, rtol=1e-5, atol=0)


def test_output_blocks_add_unused_same_level_features():
    with torch.device('meta'):
        model = SpineNet(arch='49')
    # the only block left unconsumed with an output block of its level and width is block 11
    # (level-5 bottleneck), added to the level-5 output (block 14)
    assert [(i + NUM_STEM_BLOCKS, e) for i, e in enumerate(model.extra_inputs) if e] == \
        [(14, (11,))]
    assert model.output_blocks == {4: 12, 3: 13, 5: 14, 7: 15, 6: 16}


def test_merge_sums_resampled_parents_and_extra_inputs():
    """Recompute block 14's input by hand from the feature list and compare."""
    torch.manual_seed(0)
    model = SpineNet(arch=TINY).eval()
    captured = {}
    group = model.blocks[14 - NUM_STEM_BLOCKS]
    group.register_forward_hook(lambda m, i, o: captured.setdefault('in', i[0]))
    feats = []
    for g in list(model.stem_blocks) + list(model.blocks):
        g.register_forward_hook(lambda m, i, o: feats.append(o))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
        pair = model.resamples[14 - NUM_STEM_BLOCKS]
        size = (2, 2)  # level 5 of 64
        expected = F.relu(pair[0](feats[7], size) + pair[1](feats[12], size) + feats[11])
    torch.testing.assert_close(captured['in'], expected)


# ----------------------------------------------------------- activation, stochastic depth, init

def test_swish_and_stochastic_depth():
    model = SpineNet(arch=TINY, act_cfg=dict(type='SiLU'), drop_path_rate=0.2)
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    rates = [g[0].drop_path.p for g in model.blocks]
    assert rates == pytest.approx([0.2 * (i + 1) / 15 for i in range(15)])
    assert all(g[0].drop_path is None for g in model.stem_blocks)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])  # eval: deterministic
    with pytest.raises(ValueError, match='drop_path_rate'):
        SpineNet(arch=TINY, drop_path_rate=1.0)


def test_zero_init_residual_makes_blocks_start_as_shortcuts():
    model = SpineNet(arch=TINY)
    last_norms = [b.convs[-1].bn.weight for g in model.blocks for b in g]
    assert all(torch.equal(w, torch.zeros_like(w)) for w in last_norms)
    model = SpineNet(arch=TINY, zero_init_residual=False)
    assert all((b.convs[-1].bn.weight == 1).all() for g in model.blocks for b in g)


def test_argument_errors():
    with pytest.raises(ValueError, match='arch must be one of'):
        SpineNet(arch='50')
    with pytest.raises(ValueError, match='exactly the keys'):
        SpineNet(arch=dict(filter_size_scale=1.0))
    with pytest.raises(ValueError, match='frozen_stages'):
        SpineNet(arch=TINY, frozen_stages=3)


# ------------------------------------------------------------------------------ SepBN head

def test_sep_bn_head_shares_convs_and_separates_norms():
    torch.manual_seed(0)
    head = MODELS.build(dict(HEAD, num_classes=3, in_channels=8, feat_channels=8,
                             stacked_convs=2)).eval()
    assert len(head.cls_norms) == len(head.reg_norms) == 5
    assert all(len(n) == 2 for n in head.cls_norms)
    with torch.no_grad():  # give each level's norms different statistics
        for level, norms in enumerate(head.cls_norms):
            for norm in norms:
                norm.running_mean.fill_(0.1 * level)
    feats = [torch.randn(2, 8, s, s) for s in (16, 8, 4, 2, 1)]
    with torch.no_grad():
        cls_scores, bbox_preds = head(feats)
        for level, x in enumerate(feats):
            y = x
            for conv, norm in zip(head.cls_convs, head.cls_norms[level]):
                y = F.relu(F.batch_norm(conv.conv(y), norm.running_mean, norm.running_var,
                                        norm.weight, norm.bias, eps=norm.eps))
            torch.testing.assert_close(cls_scores[level], head.retina_cls(y))
        assert [tuple(s.shape) for s in bbox_preds] == [(2, 36, s, s) for s in (16, 8, 4, 2, 1)]
    # one conv per depth: (8 * 8 * 9 + 8) * 2 convs * 2 subnets; 5 * 2 * 2 norms of 8 * 2
    assert n_params(head) == 4 * (8 * 8 * 9 + 8) + 20 * 16 + (8 * 27 * 9 + 27) + (8 * 36 * 9 + 36)
    with pytest.raises(ValueError, match='num_levels=4'):
        MODELS.build(dict(HEAD, num_classes=3, in_channels=8, num_levels=4))
    with pytest.raises(ValueError, match='norms for 5 levels'):
        head(feats[:4])


# ----------------------------------------------------------------------------- BCCD recipe

def _sample(boxes, labels, shape=(64, 96)):
    sample = DataSample(metainfo=dict(img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0),
                                      flip=False, flip_direction=None, batch_input_shape=shape))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return sample


def test_bccd_recipe_trains_and_predicts():
    """The BCCD recipe's detector (counted on the meta device; trained with a narrow SpineNet
    and head for speed): finite losses with and without objects, the loss falls over a few AdamW
    steps on one batch, predictions come back in the image frame."""
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_spinenet-49s_320_bccd.py'))
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert model.neck is None and model.backbone.arch == ARCH_SETTINGS['49S']
    assert n_params(model) == 10_055_038  # 9,089,215 backbone + 965,823 head (3 classes)
    cfg.model.backbone.arch = TINY
    cfg.model.bbox_head.update(in_channels=16, feat_channels=16)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    inputs = torch.randn(2, 3, 64, 96)
    samples = [_sample([[8, 8, 40, 40], [50, 10, 90, 30]], [0, 2]), _sample([], [])]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(4):
        loss = sum(model(inputs, samples, mode='loss').values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    empty = model(inputs, [_sample([], []), _sample([], [])], mode='loss')
    assert empty['loss_bbox'].item() == 0.0 and torch.isfinite(empty['loss_cls'])
    model.eval()
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    boxes = preds[0].pred_instances.bboxes
    assert boxes.shape[1] == 4 and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()
