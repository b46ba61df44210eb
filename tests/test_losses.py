"""Loss plugins against torchvision and hand-computed values."""
import math

import torch
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss as tv_focal

from toolbox.registry import MODELS
from toolbox_plugins.losses.box_losses import smooth_l1_loss
from toolbox_plugins.losses.focal_loss import sigmoid_focal_loss


def test_focal_loss_matches_torchvision_elementwise_and_reduced():
    torch.manual_seed(0)
    logits = torch.randn(64, 5) * 3
    labels = torch.randint(0, 6, (64,))  # 5 = background
    one_hot = torch.nn.functional.one_hot(labels, 6)[:, :5].float()
    ours = sigmoid_focal_loss(logits, labels, gamma=2.0, alpha=0.25)
    ref = tv_focal(logits, one_hot, alpha=0.25, gamma=2, reduction='none')
    assert (ours - ref).abs().max().item() < 1e-6
    module = MODELS.build(dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=2.0))
    num_pos = float((labels < 5).sum())
    torch.testing.assert_close(module(logits, labels, avg_factor=num_pos),
                               2.0 * ref.sum() / num_pos)


def test_focal_loss_hand_value():
    # p = sigmoid(0) = 0.5, target 1: alpha * (1 - 0.5)^2 * log 2
    value = sigmoid_focal_loss(torch.zeros(1, 1), torch.ones(1, 1)).item()
    assert math.isclose(value, 0.25 * 0.25 * math.log(2), rel_tol=1e-6)


def test_giou_matches_torchvision_and_empty_input_is_zero():
    torch.manual_seed(1)
    a = torch.rand(10, 2) * 50
    pred = torch.cat([a, a + torch.rand(10, 2) * 30 + 1], 1)
    b = torch.rand(10, 2) * 50
    target = torch.cat([b, b + torch.rand(10, 2) * 30 + 1], 1)
    loss = MODELS.build(dict(type='GIoULoss', reduction='sum'))
    torch.testing.assert_close(loss(pred, target),
                               generalized_box_iou_loss(pred, target, reduction='sum'))
    empty = MODELS.build(dict(type='GIoULoss'))(torch.zeros(0, 4), torch.zeros(0, 4),
                                                avg_factor=1.0)
    assert empty.item() == 0.0


def test_smooth_l1_and_l1_hand_values():
    pred, target = torch.tensor([0.0, 0.0]), torch.tensor([0.5, 3.0])
    # beta 1: 0.5 * 0.25 = 0.125 ; 3 - 0.5 = 2.5
    torch.testing.assert_close(smooth_l1_loss(pred, target, beta=1.0), torch.tensor([0.125, 2.5]))
    l1 = MODELS.build(dict(type='L1Loss', reduction='sum', loss_weight=0.5))
    assert l1(pred, target).item() == 0.5 * 3.5
