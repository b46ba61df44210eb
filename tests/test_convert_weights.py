"""``tools/convert_weights.py``: reference checkpoints (timm ``legacy_xception``, a torchvision
ResNet-18, the same inside an MMDetection detector checkpoint) converted into our layout."""
import subprocess
import sys

import pytest
import torch

from toolbox.engine.weights import load_weights
from toolbox_plugins.backbones.resnet import ResNet
from toolbox_plugins.backbones.xception import Xception

from .conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / 'tools'))
from convert_weights import convert  # noqa: E402


@pytest.fixture(scope='module')
def resnet18_state_dict():
    import torchvision
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_timm_legacy_xception_through_the_command_line(tmp_path):
    import timm
    torch.manual_seed(0)
    reference = timm.create_model('legacy_xception', pretrained=False).eval()
    src, dst = tmp_path / 'legacy_xception.pth', tmp_path / 'out' / 'xception.pth'
    torch.save(reference.state_dict(), src)
    out = subprocess.run([sys.executable, 'tools/convert_weights.py', str(src), str(dst),
                          '--arch', 'legacy_xception', '--from', 'timm'],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'missing 0, unexpected 2, mismatched 0' in out.stdout
    assert 'unexpected: fc.weight' in out.stdout and 'unexpected: fc.bias' in out.stdout
    assert list(tmp_path.joinpath('out').iterdir()) == [dst]  # no temporary file left

    converted = torch.load(dst, weights_only=True)
    ours = Xception(out_indices=(4,), stem_padding='valid').eval()
    assert set(converted) == set(ours.state_dict())
    assert load_weights(ours, str(dst)) == dict(missing=[], unexpected=[], mismatched=[])
    x = torch.randn(1, 3, 71, 71, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(x)[0] - reference.forward_features(x)).abs().max().item() < 1e-5


def test_torchvision_resnet18_and_its_mmdet_detector_checkpoint(tmp_path, resnet18_state_dict):
    src = tmp_path / 'resnet18.pth'
    torch.save(resnet18_state_dict, src)
    report = convert(str(src), str(tmp_path / 'r18.pth'), 'resnet18', 'official')
    assert report == dict(missing=[], unexpected=['fc.weight', 'fc.bias'], mismatched=[])
    converted = torch.load(tmp_path / 'r18.pth', weights_only=True)
    assert set(converted) == set(ResNet(depth=18).state_dict())
    assert all(torch.equal(converted[k], resnet18_state_dict[k]) for k in converted)

    # an mmdet detector checkpoint: backbone.* kept without the prefix, the rest dropped
    detector = {'meta': {'epoch': 12}, 'state_dict': {
        **{f'backbone.{k}': v for k, v in resnet18_state_dict.items() if not k.startswith('fc')},
        'neck.lateral_convs.0.conv.weight': torch.zeros(256, 128, 1, 1)}}
    torch.save(detector, tmp_path / 'retinanet.pth')
    report = convert(str(tmp_path / 'retinanet.pth'), str(tmp_path / 'from_mmdet.pth'),
                     'ResNet', 'mmdet', backbone_args=dict(depth=18))
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    from_mmdet = torch.load(tmp_path / 'from_mmdet.pth', weights_only=True)
    assert all(torch.equal(from_mmdet[k], converted[k]) for k in converted)


def test_missing_weights_stop_the_conversion(tmp_path, resnet18_state_dict):
    src, dst = tmp_path / 'resnet18.pth', tmp_path / 'r34.pth'
    torch.save(resnet18_state_dict, src)
    with pytest.raises(SystemExit, match=r'not written: \d+ missing and 0 mismatched keys'):
        convert(str(src), str(dst), 'resnet34', 'official')
    assert not dst.exists()
    report = convert(str(src), str(dst), 'resnet34', 'official', allow_missing=True)
    assert 'layer1.2.conv1.weight' in report['missing']
    assert 'layer1.2.conv1.weight' not in torch.load(dst, weights_only=True)


def test_bad_inputs_are_named(tmp_path, resnet18_state_dict):
    src = tmp_path / 'resnet18.pth'
    torch.save(resnet18_state_dict, src)
    with pytest.raises(SystemExit, match="--arch 'resnet19' is neither a preset.*Closest "
                                         "registered names: \\['ResNet'"):
        convert(str(src), str(tmp_path / 'x.pth'), 'resnet19', 'timm')
    with pytest.raises(SystemExit, match="--arch 'FPN' is registered but is not a backbone"):
        convert(str(src), str(tmp_path / 'x.pth'), 'FPN', 'timm')
    with pytest.raises(SystemExit, match=r"Xception: Xception converts checkpoints from "
                                         r"\('timm',\), got source='official'"):
        convert(str(src), str(tmp_path / 'x.pth'), 'legacy_xception', 'official')
    with pytest.raises(SystemExit, match='nowhere.pth.*does not exist'):
        convert(str(tmp_path / 'nowhere.pth'), str(tmp_path / 'x.pth'), 'resnet18', 'timm')
    torch.save({'state_dict': {}, 'hook': print}, tmp_path / 'pickled.pth')
    with pytest.raises(SystemExit, match='weights_only=True'):
        convert(str(tmp_path / 'pickled.pth'), str(tmp_path / 'x.pth'), 'resnet18', 'timm')
