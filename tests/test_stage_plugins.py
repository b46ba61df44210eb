"""Stage plugins (mmdet's ``plugins=[dict(cfg=..., stages=..., position=...)]``) in ResNet and
VoVNet: validation, where each position sits (the tensor a plugin receives, by hooks), the
channels it is built with, key names and checkpoint loading, freezing and initialisation."""
import pytest
import timm
import torch
import torchvision
from torch import nn

from toolbox.engine.weights import load_weights
from toolbox.models.layers import build_plugin_sequence, parse_plugins, select_stage_plugins
from toolbox.registry import MODELS

from .helpers import randomise_bn


@MODELS.register_module(name='_TestRecordingGate', force=True)
class RecordingGate(nn.Module):
    """x * scale * (1 + fc(mean_hw(x))): with ``fc`` zero (its init) a fixed scaling; keeps the
    ``in_channels`` it was built with and a copy of its last input."""

    def __init__(self, in_channels: int, scale: float = 1.0):
        super().__init__()
        self.in_channels, self.scale = in_channels, scale
        self.fc = nn.Conv2d(in_channels, in_channels, 1)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return x * self.scale * (1 + self.fc(x.mean((2, 3), keepdim=True)))


def gate(position, stages=None, scale=1.0):
    plugin = dict(cfg=dict(type='_TestRecordingGate', scale=scale), position=position)
    if stages is not None:
        plugin['stages'] = stages
    return plugin


def captured_outputs(modules):
    """Forward hooks storing a copy of each module's output (before in-place ReLUs change it)."""
    store = {}
    handles = [m.register_forward_hook(
        lambda mod, inp, out, name=name: store.__setitem__(name, out.detach().clone()))
        for name, m in modules.items()]
    return store, handles


# ------------------------------------------------------------------------------ validation

def test_parse_and_select():
    plugins = parse_plugins([gate('after_conv2', (False, True, True, True)), gate('input'),
                             gate('after_stage')], ('after_conv2', 'after_stage', 'input'))
    assert plugins[1]['stages'] is None and plugins[2]['stages'] == (True, ) * 4
    cfg = dict(type='_TestRecordingGate', scale=1.0)
    assert select_stage_plugins(plugins, 0) == {'after_stage': [cfg]}
    assert select_stage_plugins(plugins, 2) == {'after_conv2': [cfg], 'after_stage': [cfg]}
    assert select_stage_plugins(plugins, None) == {'input': [cfg]}
    assert build_plugin_sequence([], 8) is None
    sequence = build_plugin_sequence([cfg, cfg], 8)
    assert len(sequence) == 2 and sequence[1].in_channels == 8


@pytest.mark.parametrize('plugin, message', [
    (gate('after_conv4'), r"position must be one of \('after_conv1'.*'input'\), got "
                          r"'after_conv4'"),
    (gate('after_conv2', (True, False)), r'stages must be 4 bools.*\(True, False\)'),
    (gate('input', (True, ) * 4), "position 'input' runs once on the image and takes no stages"),
    (gate('after_conv3'), r"'after_conv3' does not exist in ResNet-18 \(BasicBlock\); its "
                          r"positions are \('after_conv1', 'after_conv2', 'after_stage', "
                          r"'input'\)"),
    (dict(cfg=dict(type='_TestRecordingGate'), position='input', where='x'),
     r"unknown keys \['where'\]"),
    (dict(cfg=dict(type='_TestRecordingGate', in_channels=3), position='input'),
     'cfg sets in_channels'),
    (dict(cfg=None, position='input'), 'cfg must be a module config with a type'),
])
def test_resnet_rejects_bad_plugins(plugin, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(dict(type='ResNet', depth=18, plugins=[plugin]))


def test_vovnet_positions():
    with pytest.raises(ValueError, match=r"'after_conv2' does not exist in VoVNet; its "
                                         r"positions are \('after_concat', 'after_stage', "
                                         r"'input'\)"):
        MODELS.build(dict(type='VoVNet', arch='V-19-slim', plugins=[gate('after_conv2')]))


# -------------------------------------------------------------------------------- ResNet

def test_resnet50_positions_channels_and_torchvision_weights():
    """Bottleneck positions in stages 2-4 (after_conv1/2: planes, after_conv3: 4 * planes, the
    last before the residual add), after_stage on C2..C5, input on the 3-channel image. Keys
    nest under plugins_<position>; torchvision's resnet50 loads with only those missing."""
    stages = (False, True, True, True)
    model = MODELS.build(dict(type='ResNet', depth=50, plugins=[
        gate('after_conv1', stages), gate('after_conv2', stages), gate('after_conv3', stages),
        gate('after_stage'), gate('input')]))
    assert model.layer1[0].plugins_after_conv1 is None
    for i, planes in ((2, 128), (3, 256), (4, 512)):
        for block in getattr(model, f'layer{i}'):
            assert block.plugins_after_conv1[0].in_channels == planes
            assert block.plugins_after_conv2[0].in_channels == planes
            assert block.plugins_after_conv3[0].in_channels == 4 * planes
    assert [model.plugins_after_stage[f'layer{i}'][0].in_channels for i in range(1, 5)] == \
        [256, 512, 1024, 2048]
    assert model.plugins_input[0].in_channels == 3
    keys = set(model.state_dict())
    assert {'layer2.0.plugins_after_conv2.0.fc.weight', 'layer4.2.plugins_after_conv3.0.fc.bias',
            'plugins_after_stage.layer1.0.fc.weight', 'plugins_input.0.fc.weight'} <= keys
    assert model.layer2[0].plugins_after_conv2[0].fc.weight.abs().max() == 0  # own init kept

    report = load_weights(model, torchvision.models.resnet50(weights=None).state_dict())
    assert report['mismatched'] == [] and report['unexpected'] == ['fc.weight', 'fc.bias']
    assert report['missing'] and all('plugins_' in k for k in report['missing'])
    # 13 blocks x 3 positions + 4 stages + input, each fc.weight and fc.bias
    assert len(report['missing']) == (13 * 3 + 4 + 1) * 2

    model.eval()
    x = torch.randn(1, 3, 32, 32)
    block = model.layer3[1]
    store, handles = captured_outputs(dict(bn1=block.bn1, bn2=block.bn2, bn3=block.bn3,
                                           layer3=model.layer3))
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    assert torch.equal(block.plugins_after_conv1[0].seen, store['bn1'].relu())
    assert torch.equal(block.plugins_after_conv2[0].seen, store['bn2'].relu())
    assert torch.equal(block.plugins_after_conv3[0].seen, store['bn3'])  # before the add
    assert torch.equal(model.plugins_after_stage['layer3'][0].seen, store['layer3'])
    assert torch.equal(model.plugins_input[0].seen, x)


def test_resnet18_plugins_change_the_output_where_they_sit():
    """BasicBlock: after_conv2 sees bn2's output before the add. Identity plugins leave the
    outputs equal to the plain ResNet-18 with the same weights; an after_stage plugin scaling by
    2 doubles exactly that stage's output (and changes the later ones)."""
    torch.manual_seed(0)
    plain = randomise_bn(MODELS.build(dict(type='ResNet', depth=18))).eval()
    plugins = [gate('after_conv1'), gate('after_conv2', (True, True, False, False)),
               gate('after_stage', (False, True, False, False), scale=2.0)]
    model = MODELS.build(dict(type='ResNet', depth=18, plugins=plugins)).eval()
    assert model.layer3[0].plugins_after_conv2 is None
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    store, handles = captured_outputs(dict(bn2=model.layer2[1].bn2))
    with torch.no_grad():
        ours, theirs = model(x), plain(x)
    handles[0].remove()
    assert torch.equal(model.layer2[1].plugins_after_conv2[0].seen, store['bn2'])
    assert (ours[0] - theirs[0]).abs().max() < 1e-5
    assert (ours[1] - 2 * theirs[1]).abs().max() < 1e-5
    assert (ours[2] - theirs[2]).abs().max() > 1e-3


def test_resnet_frozen_stages_freeze_their_after_stage_plugins():
    model = MODELS.build(dict(type='ResNet', depth=18, frozen_stages=2,
                              plugins=[gate('after_stage'), gate('input'),
                                       gate('after_conv1', (False, True, True, False))]))
    frozen = {name: all(not p.requires_grad for p in m.parameters())
              for name, m in model.plugins_after_stage.items()}
    assert frozen == {'layer1': True, 'layer2': True, 'layer3': False, 'layer4': False}
    assert not model.layer2[0].plugins_after_conv1[0].fc.weight.requires_grad
    assert model.layer3[0].plugins_after_conv1[0].fc.weight.requires_grad
    assert model.plugins_input[0].fc.weight.requires_grad


# -------------------------------------------------------------------------------- VoVNet

def test_vovnet_after_concat_after_stage_and_timm_weights():
    """V-19-slim (V2): after_concat sits after conv_concat (1x1+BN+ReLU), before eSE; its
    in_channels is the stage's output width. timm's ese_vovnet19b_slim weights still load, only
    the plugin keys missing."""
    model = MODELS.build(dict(type='VoVNet', arch='V-19-slim', version=2, plugins=[
        gate('after_concat', (False, False, True, True)), gate('after_stage', scale=0.5),
        gate('input')])).eval()
    assert model.stages[1].blocks[0].plugins_after_concat is None
    assert [model.stages[i].blocks[0].plugins_after_concat[0].in_channels for i in (2, 3)] == \
        [384, 512]
    assert [model.stages[i].plugins_after_stage[0].in_channels for i in range(4)] == \
        [112, 256, 384, 512]
    block = model.stages[3].blocks[0]
    store, handles = captured_outputs(dict(concat=block.conv_concat, attn=block.attn,
                                           blocks=model.stages[3].blocks))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = model(x)
    for handle in handles:
        handle.remove()
    assert torch.equal(block.plugins_after_concat[0].seen, store['concat'])
    assert torch.equal(model.stages[3].plugins_after_stage[0].seen, store['blocks'])
    assert torch.equal(outs[3], 0.5 * store['blocks'])
    assert torch.equal(model.plugins_input[0].seen, x)

    reference = timm.create_model('ese_vovnet19b_slim', pretrained=False)
    report = model.load_pretrained(reference.state_dict())
    assert report['mismatched'] == [] and report['missing']
    assert all('plugins_' in k for k in report['missing'])


# ------------------------------------------------------- the attention plugins


def test_mmdet_style_config_with_se_and_spatial_transformer():
    model = MODELS.build(dict(type='ResNet', depth=18, plugins=[
        dict(cfg=dict(type='SE', ratio=1 / 16), stages=(False, True, True, True),
             position='after_conv2'),
        dict(cfg=dict(type='SpatialTransformer'), position='input')]))
    assert model.layer1[0].plugins_after_conv2 is None
    assert model.layer4[1].plugins_after_conv2 is not None
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.layer4[1].plugins_after_conv2.parameters())
    assert all(p.grad is not None for p in model.plugins_input.parameters())
