"""Folding BatchNorms into convolutions for inference (toolbox/models/layers/fuse.py): the pair
rules on toy modules, unchanged outputs of the detector and segmentor kinds, the test-time hook
(``tools/test.py --fuse-conv-bn``), the inference API, and channels-last by default for bf16 on
a CPU. Every registered backbone is checked in ``test_contracts.py``."""
import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from toolbox.analysis import build_model, network_input
from toolbox.engine import load_config
from toolbox.engine.precision import apply_speed_options, default_channels_last
from toolbox.models.layers import ModulatedDeformConv2dPack, fuse_conv_bn
from toolbox.registry import MODELS

from .conftest import REPO_ROOT
from .helpers import load_tool
from .test_contracts import randomise_norm_statistics

DEMO = str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py')


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_a_batch_norm_after_a_conv_is_folded_with_the_hand_computed_affine_map():
    conv = nn.Conv2d(2, 3, 1, bias=True)
    norm = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.arange(6.0).reshape(3, 2, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
        norm.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]) - norm.eps)  # std 2, 1, 0.5
        norm.weight.copy_(torch.tensor([2.0, 1.0, 1.0]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, 0.5]))
    model = nn.Sequential(conv, norm).eval()
    x = torch.randn(1, 2, 4, 4)
    expected = _outputs(model, x)
    assert fuse_conv_bn(model) == 1
    assert isinstance(model[1], nn.Identity)
    # scale = weight / std = (1, 1, 2); bias' = (b - mean) * scale + beta = (0, -1, -7.5)
    torch.testing.assert_close(model[0].weight.flatten(),
                               torch.tensor([0.0, 1.0, 2.0, 3.0, 8.0, 10.0]))
    torch.testing.assert_close(model[0].bias, torch.tensor([0.0, -1.0, -7.5]))
    torch.testing.assert_close(_outputs(model, x), expected)


def test_only_adjacent_known_pairs_fold_and_frozen_non_affine_and_deformable_ones_do():
    model = nn.ModuleDict(dict(
        # a ReLU between: not a conv -> BN pair (mmcv's would fold the BN into the conv)
        apart=nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4)),
        frozen=nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), FrozenBatchNorm2d(4)),
        plain=nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, affine=False)),
        batch_stats=nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4,
                                                                    track_running_stats=False)),
        deform=nn.Sequential(ModulatedDeformConv2dPack(3, 4, 3, padding=1), nn.BatchNorm2d(4)),
        transposed=nn.Sequential(nn.ConvTranspose2d(3, 4, 2, 2), nn.BatchNorm2d(4)),
    )).eval()
    randomise_norm_statistics(model)
    x = torch.randn(2, 3, 8, 8)
    expected = {name: _outputs(branch, x) for name, branch in model.items()}
    assert fuse_conv_bn(model) == 3
    folded = {name for name, branch in model.items() if isinstance(branch[-1], nn.Identity)}
    assert folded == {'frozen', 'plain', 'deform'}
    for name, branch in model.items():
        torch.testing.assert_close(_outputs(branch, x), expected[name], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='call model.eval'):
        fuse_conv_bn(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))


def test_folded_weights_keep_the_channels_last_order():
    model = nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)).eval()
    model.to(memory_format=torch.channels_last)
    fuse_conv_bn(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def _flatten(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return [t for item in outputs for t in _flatten(item)]


@pytest.mark.parametrize('config, shape', [
    ('retinanet_r18_fpn_160_demo.py', (96, 128)),  # ResNet-18: 20 BatchNorms
    ('gfl_r18-dcnv2_fpn_512_12e_bccd.py', (96, 128)),  # BatchNorms after DCNv2 convs
    ('refinedet_r101.py', (128, 128)),  # 108 with the res6 block
    ('detr_r50_8xb2-150e_coco.py', (96, 128)),  # FrozenBatchNorm2d
    ('deeplabv3plus_r18-d16_camvid.py', (96, 128)),  # ASPP and decoder ConvModules: 34
    ('fcn8s_r18_600it_camvid.py', (96, 128)),
    ('unet_600it_camvid.py', (96, 128)),
])
def test_detector_and_segmentor_outputs_are_unchanged_by_folding(config, shape):
    """Every BatchNorm of these models follows a convolution: all are folded, and the tensor
    outputs stay within 1e-4 of their scale (random BatchNorm statistics). Two-stage detectors
    are left out: their tensor output depends on a top-k of proposals, which rounding-level
    changes reorder (their backbones and necks are the ones checked here)."""
    torch.manual_seed(0)
    model = build_model(str(REPO_ROOT / 'configs' / config))
    num_norms = randomise_norm_statistics(model)
    x = network_input(model, shape, batch=2)
    expected = _flatten(_outputs(lambda inputs: model(inputs, mode='tensor'), x))
    assert fuse_conv_bn(model) == num_norms > 0
    got = _flatten(_outputs(lambda inputs: model(inputs, mode='tensor'), x))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max().item() <= 1e-4 * scale


def test_test_tool_folds_after_loading_the_checkpoint_with_the_same_metric(tmp_path, demo_root):
    """``tools/test.py --fuse-conv-bn``: the hook folds the loaded weights (random BatchNorm
    statistics, so folding matters) and the COCO numbers equal the unfolded run's."""
    tool = load_tool('test.py')
    cfg = load_config(DEMO)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    randomise_norm_statistics(model)
    checkpoint = tmp_path / 'random.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    options = [f'test_dataloader.dataset.data_root={demo_root}/coco/',
               f'test_evaluator.ann_file={demo_root}/coco/annotations/instances_val.json',
               'model.bbox_head.test_cfg.score_thr=0.0', 'model.bbox_head.test_cfg.max_per_img=20']
    plain = tool.main([DEMO, str(checkpoint), '--work-dir', str(tmp_path / 'a'),
                       '--cfg-options', *options])
    fused = tool.main([DEMO, str(checkpoint), '--fuse-conv-bn', '--work-dir',
                       str(tmp_path / 'b'), '--cfg-options', *options])
    # both work dirs: two runs started within one second share mmengine's timestamp-named
    # logger, so the second run may write into the first one's log file
    logs = ''.join(path.read_text() for path in tmp_path.rglob('*.log'))
    assert logs.count('fuse_conv_bn: folded 20 BatchNorms into convolutions') == 1
    assert fused == pytest.approx(plain, abs=1e-3)


def test_inference_api_folds_on_request():
    from toolbox.apis import init_model
    model = init_model(DEMO, fuse_conv_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in init_model(DEMO).modules())


def test_channels_last_defaults_on_for_bf16_on_a_cpu_only(monkeypatch):
    assert default_channels_last('bf16', cuda=False)
    assert not default_channels_last('fp32', cuda=False)
    assert not default_channels_last('bf16', cuda=True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr('toolbox.engine.precision.cpu_bf16_units', lambda: ['amx_bf16'])
    cfg = load_config(DEMO)
    cfg.precision = 'bf16'
    assert apply_speed_options(cfg) == 'bf16'
    assert cfg.model.data_preprocessor.channels_last
    assert dict(type='ChannelsLastHook') in cfg.custom_hooks
    explicit = load_config(DEMO)
    explicit.precision, explicit.channels_last = 'bf16', False
    apply_speed_options(explicit)
    assert not explicit.model.data_preprocessor.get('channels_last')
    tta = load_config(DEMO)  # tools/test.py --tta: the model sits in the wrapper's 'module'
    tta.precision, tta.model = 'bf16', dict(type='DetTTAModel', module=tta.model)
    apply_speed_options(tta)
    assert tta.model.module.data_preprocessor.channels_last
    assert 'data_preprocessor' not in tta.model
    fp32 = load_config(DEMO)
    fp32.fuse_conv_bn = True
    apply_speed_options(fp32)
    assert [h['type'] for h in fp32.custom_hooks] == ['FuseConvBNHook']
    torch.set_flush_denormal(False)


def test_channels_last_hook_leaves_five_dimensional_weights_alone():
    from toolbox.engine.precision import ChannelsLastHook

    class Runner:
        model = nn.ModuleDict(dict(conv2d=nn.Conv2d(3, 4, 3), conv3d=nn.Conv3d(1, 2, 3)))

    runner = Runner()
    reference = copy.deepcopy(runner.model)
    ChannelsLastHook().before_run(runner)
    assert runner.model.conv2d.weight.is_contiguous(memory_format=torch.channels_last)
    assert runner.model.conv3d.weight.is_contiguous()
    torch.testing.assert_close(runner.model.state_dict(), reference.state_dict())
