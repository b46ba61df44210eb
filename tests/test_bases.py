"""The core bases: initialisation policy, dense-head targets and flow, decode-head base used by
a head written outside the first-party plugins, backbone pretrained handling."""
import pytest
import torch
from mmengine.structures import InstanceData, PixelData
from torch import nn

from toolbox.engine import load_config
from toolbox.models.bases import BaseBackbone, BaseDecodeHead, BaseDenseHead, resize
from toolbox.registry import MODELS
from toolbox.structures import IGNORE_INDEX, DataSample

from .conftest import REPO_ROOT


def tiny_retinanet(**head):
    torch.manual_seed(0)
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    cfg.model.bbox_head.update(head)
    return MODELS.build(cfg.model)


def sample(boxes, labels, img_shape=(64, 64)):
    data_sample = DataSample(metainfo=dict(img_shape=img_shape, ori_shape=img_shape,
                                           batch_input_shape=img_shape))
    data_sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return data_sample


# ------------------------------------------------------------------ init policy
def test_runner_init_weights_keeps_the_heads_own_initialisation():
    """mmengine's default would call every child's init_weights: mmcv's ConvModule would
    Kaiming-initialise RetinaNet's normal(0.01) subnets. The toolbox's bases do not."""
    model = tiny_retinanet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()  # what the Runner calls when training starts
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.bbox_head.cls_convs[0].conv.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_an_explicit_init_cfg_is_applied_by_init_weights():
    model = tiny_retinanet(init_cfg=dict(type='Constant', val=0.5, layer='Conv2d'))
    assert not torch.all(model.bbox_head.retina_reg.weight == 0.5)
    model.init_weights()
    assert torch.all(model.bbox_head.retina_reg.weight == 0.5)
    assert model.bbox_head.is_init


class _Tiny(BaseBackbone):
    def __init__(self, **kwargs):
        super().__init__(out_indices=(0,), **kwargs)
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.out_channels, self.strides = (4,), (2,)
        self.freeze_stages()

    def forward(self, x):
        return (self.conv(x),)


def test_backbone_pretrained_shorthand_prefix_map_and_errors(tmp_path):
    source = _Tiny()
    path = tmp_path / 'weights.pth'
    torch.save({f'backbone.{k}': v for k, v in source.state_dict().items()}, path)
    target = _Tiny(init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                 prefix_map={'backbone.': ''}))
    assert target.pretrained == str(path)
    assert not torch.equal(target.conv.weight, source.conv.weight)  # nothing read at build
    report = target.init_weights()
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    assert torch.equal(target.conv.weight, source.conv.weight)
    assert _Tiny().pretrained is None and _Tiny().init_weights() is None
    with pytest.raises(ValueError, match='either pretrained or init_cfg'):
        _Tiny(pretrained=str(path), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='does not support frozen_stages'):
        _Tiny(frozen_stages=0)


# ------------------------------------------------------------------ dense head
def test_get_targets_with_shared_and_per_image_priors_and_class_agnostic():
    head = tiny_retinanet(num_classes=3).bbox_head
    priors = torch.tensor([[0., 0., 10., 10.], [0., 0., 20., 20.], [30., 30., 40., 40.]])
    gts = [InstanceData(bboxes=torch.tensor([[0., 0., 10., 10.]]), labels=torch.tensor([2])),
           InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    metas = [dict(img_shape=(64, 64))] * 2
    targets = head.get_targets(priors, gts, metas)
    # prior 0: IoU 1 -> positive class 2; prior 1: IoU 0.25 < 0.4 -> negative; prior 2: negative
    assert targets.labels.tolist() == [[2, 3, 3], [3, 3, 3]]
    assert targets.label_weights.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert targets.pos_mask.tolist() == [[True, False, False], [False] * 3]
    assert targets.avg_factor == 1.0
    # the demo recipe regresses decoded boxes (GIoU): the target is the gt box itself
    assert head.reg_decoded_bbox and targets.bbox_targets[0, 0].tolist() == [0, 0, 10, 10]
    head.reg_decoded_bbox = False  # deltas: the gt box is its prior, so all zeros
    assert torch.equal(head.get_targets(priors, gts, metas).bbox_targets[0, 0], torch.zeros(4))
    agnostic = head.get_targets(priors.expand(2, -1, -1), gts, metas, background_label=1,
                                class_agnostic=True)
    assert agnostic.labels.tolist() == [[0, 1, 1], [1, 1, 1]]
    # a prior between the thresholds (IoU 0.45 with pos 0.5 / neg 0.4) is ignored
    between = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 22.2]])
    ignored = head.get_targets(between, gts[:1], metas[:1])
    assert ignored.label_weights.tolist() == [[1, 0]]


def test_random_sampler_limits_the_weighted_priors():
    head = tiny_retinanet(num_classes=1, sampler=dict(type='RandomSampler', num=4,
                                                      pos_fraction=0.5,
                                                      add_gt_as_proposals=False)).bbox_head
    priors = torch.rand(200, 2) * 50
    priors = torch.cat([priors, priors + 10], dim=1)
    gts = [InstanceData(bboxes=priors[:3].clone(), labels=torch.zeros(3, dtype=torch.long))]
    torch.manual_seed(0)
    targets = head.get_targets(priors, gts, [dict(img_shape=(64, 64))])
    assert targets.label_weights.sum().item() == 4
    assert targets.pos_mask.sum().item() == 2 and targets.neg_mask.sum().item() == 2


def test_loss_and_predict_equals_loss_then_predict():
    model = tiny_retinanet()
    feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    data = [sample([[8, 8, 40, 40]], [1])]
    proposal_cfg = dict(max_per_img=5, score_thr=0.0)
    losses, predictions = model.bbox_head.loss_and_predict(feats, data, proposal_cfg)
    expected_losses = model.bbox_head.loss(feats, data)
    assert all(torch.equal(losses[k], expected_losses[k]) for k in expected_losses)
    expected = model.bbox_head.predict_by_feat(*model.bbox_head(feats),
                                               batch_img_metas=[data[0].metainfo],
                                               cfg=proposal_cfg)[0]
    assert len(predictions[0]) == 5 and torch.equal(predictions[0].bboxes, expected.bboxes)
    assert not predictions[0].bboxes.requires_grad


def test_priors_are_cached_per_feature_size():
    head = tiny_retinanet().bbox_head
    maps = [torch.zeros(1, 1, s, s) for s in (8, 4, 2)]
    first = head.grid_priors(maps)
    assert head.grid_priors(maps) is first
    assert head.num_priors_per_level(maps) == [9 * 64, 9 * 16, 9 * 4]
    other = head.grid_priors([torch.zeros(1, 1, s, s) for s in (4, 2, 1)])
    assert other.shape == (9 * 21, 4) and other is not first


def test_dense_head_is_abstract():
    with pytest.raises(TypeError, match='abstract'):
        BaseDenseHead(num_classes=1)


# ----------------------------------------------------------------- decode head
class _OutsideHead(BaseDecodeHead):
    """A decode head as a third-party package would write it: on the core base only."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = nn.Conv2d(self.in_channels, self.channels, 3, padding=1)
        self.reset_parameters()

    def features(self, feats):
        return torch.relu(self.conv(feats[self.in_index]))


def test_a_decode_head_outside_the_plugins_trains_and_predicts():
    head = _OutsideHead(in_channels=4, channels=8, num_classes=3, norm_cfg=None,
                        dropout_ratio=0.0)
    assert head.ignore_index == IGNORE_INDEX == 255
    assert head.conv_seg.weight.std().item() == pytest.approx(0.01, rel=0.2)
    feats = (torch.randn(2, 4, 8, 8),)
    data = []
    for _ in range(2):
        data_sample = DataSample(metainfo=dict(batch_input_shape=(16, 16)))
        labels = torch.randint(0, 3, (1, 16, 16))
        labels[:, :4] = IGNORE_INDEX
        data_sample.gt_sem_seg = PixelData(data=labels)
        data.append(data_sample)
    losses = head.loss(feats, data)
    assert set(losses) == {'loss_ce', 'acc_seg'} and torch.isfinite(losses['loss_ce'])
    # uniform logits: every non-ignored pixel costs log 3
    nn.init.zeros_(head.conv_seg.weight)
    assert head.loss(feats, data)['loss_ce'].item() == pytest.approx(torch.log(
        torch.tensor(3.0)).item(), rel=1e-6)
    predictions = head.predict(feats, data)
    assert predictions[0].seg_logits.shape == (3, 16, 16)


def test_resize_is_bilinear_in_2d_and_trilinear_in_3d():
    x2 = torch.arange(4.).reshape(1, 1, 2, 2)
    assert resize(x2, (2, 2)) is x2
    assert resize(x2, (4, 4), align_corners=True)[0, 0, 0].tolist() == pytest.approx(
        [0, 1 / 3, 2 / 3, 1])
    x3 = torch.arange(8.).reshape(1, 1, 2, 2, 2)
    out = resize(x3, (3, 3, 3), align_corners=True)
    assert out.shape == (1, 1, 3, 3, 3) and out[0, 0, 1, 1, 1].item() == pytest.approx(3.5)
