"""Long-tail learning (issue 13): sigmoid Balanced Softmax, EQL v1 / v2, CRL, class-aware
samplers and the dataset statistics tool. Hand-computed cases, the limiting cases of each
method, finite-difference gradients (float64), checkpoint state and sampler DDP / resume."""
import importlib.util
import itertools
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from toolbox.datasets.samplers import (ClassBalancedSampler, RepeatFactorSampler,
                                       image_class_matrix, repeat_factors)
from toolbox.registry import DATA_SAMPLERS, MODELS
from toolbox_plugins.losses.long_tail import (batch_imbalance, batch_minority_classes,
                                              class_rectification_loss,
                                              class_rectification_term, eqlv2_weights,
                                              mine_hard_samples, sigmoid_log_prior_odds)

from .conftest import REPO_ROOT, shared_data


def _sig(x):
    return 1 / (1 + math.exp(-x))


# ------------------------------------------------------------------ sigmoid balanced softmax
def test_sigmoid_balanced_softmax_hand_case():
    # counts 3:1 -> f = (0.75, 0.25), C = 2: shifts log(3) and -log(3) (log(C - 1) = 0)
    loss = MODELS.build(dict(type='SigmoidBalancedSoftmaxLoss', class_counts=[3, 1]))
    logits = torch.tensor([[0.5, -0.2], [0.3, 0.1]])
    labels = torch.tensor([0, 2])  # a foreground row of class 0, a background row
    got = loss(logits, labels)
    fg = -math.log(_sig(0.5 + math.log(3))) - math.log(1 - _sig(-0.2 - math.log(3)))
    bg = -math.log(1 - _sig(0.3)) - math.log(1 - _sig(0.1))  # background: logits unchanged
    assert got.item() == pytest.approx((fg + bg) / 2, rel=1e-6)  # sum / non-ignored rows
    assert sigmoid_log_prior_odds([1, 2, 5]).tolist() == pytest.approx(
        [math.log(1 / 7) + math.log(2), math.log(2 / 6) + math.log(2),
         math.log(5 / 3) + math.log(2)])


def test_sigmoid_balanced_softmax_uniform_prior_is_plain_bce_and_focal():
    torch.manual_seed(0)
    logits, labels = torch.randn(20, 4), torch.randint(0, 5, (20,))
    onehot = F.one_hot(labels, 5)[:, :4].float()
    bce = MODELS.build(dict(type='SigmoidBalancedSoftmaxLoss', class_counts=[7] * 4))
    torch.testing.assert_close(bce(logits, labels),
                               F.binary_cross_entropy_with_logits(logits, onehot,
                                                                  reduction='sum') / 20)
    focal = MODELS.build(dict(type='SigmoidBalancedSoftmaxLoss', class_counts=[7] * 4,
                              focal_gamma=2.0, focal_alpha=0.25))
    expected = sigmoid_focal_loss(logits, onehot, alpha=0.25, gamma=2, reduction='sum') / 6.0
    torch.testing.assert_close(focal(logits, labels, avg_factor=6.0), expected)


def test_sigmoid_balanced_softmax_weights_ignore_and_counts_from_the_dataset_dict():
    loss = MODELS.build(dict(type='SigmoidBalancedSoftmaxLoss'))
    with pytest.raises(RuntimeError, match='ClassCountsHook'):
        loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    loss.set_class_counts(dict(instance_counts=np.array([2381, 214, 209]), num_images=205))
    logits, labels = torch.randn(4, 3), torch.tensor([0, 3, 1, 255])
    # an ignored row and a zero-weight row add nothing and are not counted in the mean
    kept = loss(logits[:3], labels[:3], weight=torch.tensor([1.0, 1.0, 0.0]), avg_factor=2.0)
    torch.testing.assert_close(loss(logits[:2], labels[:2]), kept)
    torch.testing.assert_close(loss(logits, labels), loss(logits[:3], labels[:3]))
    with pytest.raises(ValueError, match='labels must lie'):
        loss(logits, torch.tensor([0, 4, 1, 2]))


# ------------------------------------------------------------------------------ EQL v1
def test_eql_without_tail_classes_is_plain_bce():
    torch.manual_seed(1)
    logits, labels = torch.randn(16, 5), torch.randint(0, 6, (16,))
    onehot = F.one_hot(labels, 6)[:, :5].float()
    loss = MODELS.build(dict(type='EqualizationLoss', lambda_=0.00177,
                             image_frequencies=[0.9, 0.5, 0.1, 0.01, 0.002]))
    assert not loss.tail.any()
    torch.testing.assert_close(loss(logits, labels),
                               F.binary_cross_entropy_with_logits(logits, onehot,
                                                                  reduction='sum') / 16)


def test_eql_hand_case_drops_tail_negatives_of_foreground_rows_only():
    loss = MODELS.build(dict(type='EqualizationLoss', lambda_=0.3))
    loss.set_class_counts(dict(image_counts=np.array([8, 2]), num_images=10))  # f = .8, .2
    assert loss.tail.tolist() == [False, True]
    logits = torch.tensor([[1.0, 2.0], [0.5, -1.0], [-0.3, 0.7]])
    labels = torch.tensor([0, 1, 2])  # fg class 0, fg class 1 (tail), background
    # row 0: the tail class 1 is a negative of a foreground row -> its term is dropped
    row0 = -math.log(_sig(1.0))
    row1 = -math.log(1 - _sig(0.5)) - math.log(_sig(-1.0))  # class 0 is not tail: kept
    row2 = -math.log(1 - _sig(-0.3)) - math.log(1 - _sig(0.7))  # background keeps everything
    assert loss(logits, labels).item() == pytest.approx((row0 + row1 + row2) / 3, rel=1e-6)


# ------------------------------------------------------------------------------ EQL v2
def test_eqlv2_weight_function_and_first_call_is_plain_bce():
    pos_w, neg_w = eqlv2_weights(torch.tensor([0.8, 0.0, 2.0]), torch.tensor([1.0, 1.0, 0.0]))
    # g = 0.8: f = 0.5 -> neg 0.5, pos 1 + 4 * 0.5 = 3; g = 0: f = sigmoid(-9.6); no stats: 1, 1
    f0 = 1 / (1 + math.exp(12 * 0.8))
    assert neg_w.tolist() == pytest.approx([0.5, f0, 1.0])
    assert pos_w.tolist() == pytest.approx([3.0, 1 + 4 * (1 - f0), 1.0])

    torch.manual_seed(2)
    logits, labels = torch.randn(10, 3), torch.randint(0, 4, (10,))
    onehot = F.one_hot(labels, 4)[:, :3].float()
    loss = MODELS.build(dict(type='EqualizationLossV2', num_classes=3)).train()
    torch.testing.assert_close(loss(logits, labels),
                               F.binary_cross_entropy_with_logits(logits, onehot,
                                                                  reduction='sum') / 10)
    # statistics of the first call: |p - y| summed over positive / negative terms (weights 1)
    grad = (logits.sigmoid() - onehot).abs().double()
    torch.testing.assert_close(loss.pos_grad, (grad * onehot).sum(0))
    torch.testing.assert_close(loss.neg_grad, (grad * (1 - onehot)).sum(0))
    # second call: re-weighted by the accumulated ratio
    pos_w, neg_w = eqlv2_weights(loss.pos_grad, loss.neg_grad)
    weight = pos_w.float() * onehot + neg_w.float() * (1 - onehot)
    expected = (weight * F.binary_cross_entropy_with_logits(logits, onehot,
                                                            reduction='none')).sum() / 10
    torch.testing.assert_close(loss(logits, labels), expected)
    # and the statistics then add the re-weighted gradient magnitudes w_ij |p_ij - y_ij|
    pos_w, neg_w = loss.weights()
    before = loss.pos_grad.clone(), loss.neg_grad.clone()
    loss(logits, labels)
    torch.testing.assert_close(loss.pos_grad - before[0], (grad * pos_w * onehot).sum(0))
    torch.testing.assert_close(loss.neg_grad - before[1], (grad * neg_w * (1 - onehot)).sum(0))


def test_eqlv2_state_survives_a_state_dict_round_trip_and_eval_does_not_update():
    torch.manual_seed(3)
    loss = MODELS.build(dict(type='EqualizationLossV2', num_classes=4, focal_gamma=2.0,
                             focal_alpha=0.25)).train()
    for _ in range(3):
        loss(torch.randn(32, 4), torch.randint(0, 5, (32,)), avg_factor=4.0)
    state = loss.state_dict()
    assert set(state) == {'pos_grad', 'neg_grad'} and state['neg_grad'].gt(0).all()
    restored = MODELS.build(dict(type='EqualizationLossV2', num_classes=4, focal_gamma=2.0,
                                 focal_alpha=0.25)).train()
    restored.load_state_dict(state)
    logits, labels = torch.randn(32, 4), torch.randint(0, 5, (32,))
    torch.testing.assert_close(restored(logits, labels), loss(logits, labels))
    torch.testing.assert_close(restored.pos_grad, loss.pos_grad)
    frozen = loss.pos_grad.clone()
    loss.eval()
    loss(logits, labels)
    torch.testing.assert_close(loss.pos_grad, frozen)
    # ignored and zero-weight rows add no statistics
    loss.train()
    loss(logits, torch.full((32,), 255), weight=None)
    loss(logits, labels, weight=torch.zeros(32))
    torch.testing.assert_close(loss.pos_grad, frozen)


# ----------------------------------------------------------------------------------- CRL
def test_crl_profiling_and_imbalance_measure():
    counts = torch.tensor([50, 3, 0, 30, 17])
    # ascending among present: 3, 17, 30, 50; cumulative 3, 20, 50 <= 50 -> classes 1, 4, 3
    assert batch_minority_classes(counts, 0.5).tolist() == [False, True, False, True, True]
    assert batch_imbalance(counts).item() == pytest.approx(1 - 3 / 50)
    assert batch_imbalance(torch.tensor([5, 0, 5])).item() == 0
    assert batch_imbalance(torch.tensor([0, 9])).item() == 0


def test_crl_without_minority_or_imbalance_is_plain_cross_entropy():
    torch.manual_seed(4)
    ce = MODELS.build(dict(type='CrossEntropyLoss'))
    crl = MODELS.build(dict(type='ClassRectificationLoss', eta=0.5))
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0, :2] = 255
    balanced = torch.arange(32).remainder(2).reshape(2, 4, 4)  # two classes, 16 pixels each
    single = torch.zeros(2, 4, 4, dtype=torch.long)
    for lab in (balanced, single):
        torch.testing.assert_close(crl(logits, lab), ce(logits, lab))
    assert crl(logits, labels).item() != pytest.approx(ce(logits, labels).item())


def test_crl_hand_case():
    # 5 samples, classes 0 (x3) and 1 (x2): minority = {1} (2 <= 2.5); Omega = 1 - 2/3
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 0.0], [0.0, 1.0], [1.5, 0.2]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    base, crl, alpha = class_rectification_loss(logits, labels, k=2, margin=0.5, eta=0.3)
    s1 = logits.softmax(1)[:, 1].tolist()
    pos, neg = [s1[3], s1[4]], sorted([s1[0], s1[1], s1[2]])[-2:]
    expected = np.mean([max(0.0, 0.5 + n - p) for p in pos for n in neg])
    assert crl.item() == pytest.approx(expected, rel=1e-6)
    assert alpha.item() == pytest.approx(0.3 * (1 - 2 / 3))
    torch.testing.assert_close(base, F.cross_entropy(logits, labels, reduction='none'))
    module = MODELS.build(dict(type='ClassRectificationLoss', k=2, eta=0.3))
    total = (1 - alpha) * base.mean() + alpha * crl
    torch.testing.assert_close(module(logits, labels), total)


def test_crl_hard_mining_and_sigmoid_form():
    scores = torch.tensor([[0.9, 0.1, 0.6, 0.3, 0.8]])  # class 0 scores of 5 samples
    labels = torch.tensor([0, 0, 1, 2, 0])  # label 2 = background of a 2-class sigmoid head
    pos_idx, pos_ok, neg_idx, neg_ok = mine_hard_samples(scores, labels, torch.tensor([0]), k=2)
    assert pos_idx.tolist() == [[1, 4]] and neg_idx.tolist() == [[2, 3]]  # lowest / highest
    assert pos_ok.all() and neg_ok.all()
    term = class_rectification_term(scores[:, [1, 4]], scores[:, [2, 3]], pos_ok, neg_ok, 0.5)
    assert term.item() == pytest.approx(np.mean([0.5 + 0.6 - 0.1, 0.5 + 0.3 - 0.1,
                                                 max(0, 0.5 + 0.6 - 0.8), 0.0]))
    # sigmoid head: one foreground class is not imbalanced -> plain focal terms / avg_factor
    logits = torch.randn(6, 2)
    labels = torch.tensor([0, 2, 2, 0, 2, 2])
    crl = MODELS.build(dict(type='ClassRectificationLoss', use_sigmoid=True, eta=0.5,
                            focal_gamma=2.0, focal_alpha=0.25))
    onehot = F.one_hot(labels, 3)[:, :2].float()
    torch.testing.assert_close(crl(logits, labels, avg_factor=2.0),
                               sigmoid_focal_loss(logits, onehot, 0.25, 2, 'sum') / 2.0)


# ----------------------------------------------------------------------------- gradients
def _gradcheck(fn, logits):
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-5)


def test_gradients_by_finite_differences():
    torch.manual_seed(5)
    logits = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 3, 0, 0, 0, 1, 3, 255, 0])
    sbs = MODELS.build(dict(type='SigmoidBalancedSoftmaxLoss', class_counts=[9, 3, 1],
                            focal_gamma=2.0, focal_alpha=0.25)).double()
    _gradcheck(lambda z: sbs(z, labels), logits)
    eql = MODELS.build(dict(type='EqualizationLoss', lambda_=0.5,
                            image_frequencies=[0.9, 0.4, 0.1]))
    _gradcheck(lambda z: eql(z, labels), logits)
    eqlv2 = MODELS.build(dict(type='EqualizationLossV2', num_classes=3)).double().train()
    eqlv2(logits.detach(), labels)  # statistics from one call, then fixed
    _gradcheck(lambda z: eqlv2(z, labels, update=False), logits)
    crl_sig = MODELS.build(dict(type='ClassRectificationLoss', use_sigmoid=True, k=3, eta=0.5))
    _gradcheck(lambda z: crl_sig(z, labels), logits)
    pixels = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    pixel_labels = torch.tensor([0] * 20 + [1] * 6 + [2] * 3 + [3] * 1).reshape(2, 3, 5)
    crl = MODELS.build(dict(type='ClassRectificationLoss', k=4, eta=0.5))
    _gradcheck(lambda z: crl(z, pixel_labels), pixels)


# ----------------------------------------------------------------------------- samplers
class _ToyDataset:
    """Images with given class lists (``get_cat_ids``), as the samplers see a dataset."""

    def __init__(self, cat_ids, num_classes):
        self.cat_ids = cat_ids
        self.metainfo = dict(classes=tuple(f'c{i}' for i in range(num_classes)))

    def __len__(self):
        return len(self.cat_ids)

    def get_cat_ids(self, idx):
        return self.cat_ids[idx]


def test_repeat_factors_hand_case():
    # class 0 in every image (f = 1), class 1 in 1 of 4 (f = 0.25), class 2 in 2 of 4 (0.5)
    data = _ToyDataset([[0, 1], [0], [0, 2], [0, 2]], 3)
    present = image_class_matrix(data)
    assert present.tolist() == [[1, 1, 0], [1, 0, 0], [1, 0, 1], [1, 0, 1]]
    # t = 1: r = (1, 2, sqrt 2); images take the max over their classes
    np.testing.assert_allclose(repeat_factors(present, 1.0), [2, 1, math.sqrt(2), math.sqrt(2)])
    np.testing.assert_allclose(repeat_factors(present, 0.001), [1, 1, 1, 1])  # LVIS t: no tail
    np.testing.assert_allclose(repeat_factors(np.zeros((2, 3), bool), 1.0), [1, 1])


def test_repeat_factor_sampler_draws_each_image_its_factor_on_average():
    data = _ToyDataset([[0, 1], [0], [0, 2], [0, 2]], 3)
    sampler = DATA_SAMPLERS.build(dict(type='RepeatFactorSampler', repeat_thr=1.0),
                                  default_args=dict(dataset=data, seed=0))
    assert len(sampler) == round(2 + 1 + 2 * math.sqrt(2))  # 6: the expected repeated size
    draws = np.zeros(4)
    for epoch in range(400):
        sampler.set_epoch(epoch)
        draws += np.bincount(list(sampler), minlength=4)
    # stochastic rounding: image 2's 1.414 draws per epoch on average (cycled to a fixed 6)
    np.testing.assert_allclose(draws / draws.sum(), np.array([2, 1, 1.414, 1.414]) / 5.83,
                               atol=0.02)


def test_class_balanced_sampler_draws_classes_uniformly():
    data = _ToyDataset([[0]] * 18 + [[1]] * 2, 2)
    sampler = ClassBalancedSampler(data, seed=0, epoch_length=4000)
    assert len(sampler) == 4000
    drawn = np.array(list(sampler))
    assert abs((drawn >= 18).mean() - 0.5) < 0.03  # rare class drawn half of the time
    assert set(np.unique(drawn)) == set(range(20))  # every image of a class is reachable
    with pytest.raises(ValueError, match='contains any class'):
        ClassBalancedSampler(_ToyDataset([[], []], 2), seed=0)
    with pytest.raises(TypeError, match='get_cat_ids'):
        RepeatFactorSampler(list(range(3)), seed=0)


@pytest.mark.parametrize('cls', [RepeatFactorSampler, ClassBalancedSampler])
def test_samplers_split_over_ranks_and_resume(monkeypatch, cls):
    import toolbox.datasets.samplers as samplers
    data = _ToyDataset([[0, 1], [0], [0, 2], [0, 2], [0], [1]], 3)
    single = cls(data, seed=7, epoch_length=9)
    single.set_epoch(3)
    whole = list(single)
    ranks = []
    for rank in range(2):
        monkeypatch.setattr(samplers, 'get_dist_info', lambda rank=rank: (rank, 2))
        sampler = cls(data, seed=7, epoch_length=9)
        sampler.set_epoch(3)
        ranks.append(list(sampler))
    assert len(ranks[0]) == len(ranks[1]) == 5  # ceil(9 / 2), padded by cycling the epoch
    interleaved = [i for pair in zip(*ranks) for i in pair]
    assert interleaved[:9] == whole
    monkeypatch.setattr(samplers, 'get_dist_info', lambda: (0, 1))
    # resume: (seed, epoch) is the whole state
    resumed = cls(data, seed=123, epoch_length=9)
    resumed.load_state_dict(single.state_dict())
    assert list(resumed) == whole
    other = cls(data, seed=7, epoch_length=9)
    other.set_epoch(4)
    assert list(other) != whole
    # infinite mode: epoch after epoch; a replayed stream continues where it stopped
    endless = cls(data, seed=7, infinite=True, epoch_length=9)
    first = list(itertools.islice(iter(endless), 30))
    assert first[27:30] == (lambda s: (s.set_epoch(3), list(s))[1])(
        cls(data, seed=7, epoch_length=9))[:3]
    replay = iter(cls(data, seed=7, infinite=True, epoch_length=9))
    for _ in range(13):
        next(replay)
    assert [next(replay) for _ in range(17)] == first[13:]


def test_segmentation_dataset_cat_ids_from_its_maps(tmp_path):
    from toolbox.datasets import FolderSegDataset
    (tmp_path / 'img').mkdir()
    (tmp_path / 'ann').mkdir()
    maps = [np.array([[0, 0], [2, 255]]), np.array([[1, 1], [1, 1]])]
    for i, seg in enumerate(maps):
        cv2.imwrite(str(tmp_path / 'img' / f'{i}.jpg'), np.zeros((2, 2, 3), np.uint8))
        cv2.imwrite(str(tmp_path / 'ann' / f'{i}.png'), seg.astype(np.uint8))
    data = FolderSegDataset(data_root=str(tmp_path), metainfo=dict(classes=('a', 'b', 'c')),
                            data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=[])
    assert [data.get_cat_ids(0), data.get_cat_ids(1)] == [[0, 2], [1]]
    assert data.class_counts()['pixel_counts'].tolist() == [2, 4, 1]
    # every class is in 1 of the 2 images: f = 0.5, r = sqrt(2)
    np.testing.assert_allclose(repeat_factors(image_class_matrix(data), 1.0), [2 ** 0.5] * 2)


# ----------------------------------------------------------------------- dataset statistics
def test_dataset_stats_tool_on_bccd(capsys):
    shared_data('bccd')
    spec = importlib.util.spec_from_file_location('dataset_stats',
                                                  REPO_ROOT / 'tools/dataset_stats.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rows = tool.main([str(REPO_ROOT / 'configs/retinanet_r18_fpn_320_12e_bccd.py'),
                 '--repeat-thr', '1.0'])
    by_name = {row['name']: row for row in rows}
    assert [by_name[c]['instance_counts'] for c in ('RBC', 'WBC', 'Platelets')] == \
        [2381, 214, 209]
    assert by_name['Platelets']['image_frequency'] == pytest.approx(117 / 205)
    assert by_name['Platelets']['repeat_factor'] == pytest.approx(math.sqrt(205 / 117))
    assert 'Platelets' in capsys.readouterr().out


def test_eqlv2_statistics_are_in_the_detector_checkpoint_state():
    from toolbox.engine import load_config
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_320_12e_eqlv2_bccd.py'))
    model = MODELS.build(cfg.model)
    state = model.state_dict()
    assert state['bbox_head.loss_cls.pos_grad'].shape == (3,)
    assert state['bbox_head.loss_cls.neg_grad'].dtype == torch.float64
    state['bbox_head.loss_cls.neg_grad'] += 2.0
    fresh = MODELS.build(cfg.model)
    fresh.load_state_dict(state)
    assert fresh.bbox_head.loss_cls.neg_grad.tolist() == [2.0, 2.0, 2.0]


@pytest.mark.slow
def test_training_with_repeat_factor_sampling_resumes_exactly(tmp_path, demo_root):
    """Two epochs straight vs one epoch, then resume: same weights (the sampler's order is a
    function of (seed, epoch); the runner's set_epoch restores it)."""
    from toolbox.engine import build_runner

    from .test_engine import _demo_cfg, _weights

    def cfg_for(work_dir, epochs):
        cfg = _demo_cfg(demo_root, work_dir, epochs)
        cfg.train_dataloader.sampler = dict(type='RepeatFactorSampler', repeat_thr=1.0)
        cfg.train_dataloader.num_workers = 0
        cfg.train_dataloader.persistent_workers = False
        return cfg

    straight = build_runner(cfg_for(tmp_path / 'straight', 2))
    straight.train()
    build_runner(cfg_for(tmp_path / 'split', 1)).train()
    cfg = cfg_for(tmp_path / 'split', 2)
    cfg.resume, cfg.load_from = True, str(tmp_path / 'split' / 'epoch_1.pth')
    resumed = build_runner(cfg)
    resumed.train()
    assert resumed.iter == straight.iter
    expected, got = _weights(straight), _weights(resumed)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
