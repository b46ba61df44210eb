"""Reduction shared by every loss plugin: element weights, ``reduction`` and ``avg_factor``."""
from __future__ import annotations

import torch


def weight_reduce_loss(loss: torch.Tensor, weight: torch.Tensor | None = None,
                       reduction: str = 'mean', avg_factor: float | None = None) -> torch.Tensor:
    """Multiply by ``weight`` (broadcast), then reduce.

    ``avg_factor`` replaces the element count in a ``'mean'`` (detection losses are averaged
    over the number of positive anchors, not over all elements).
    """
    if weight is not None:
        loss = loss * weight
    if reduction == 'none':
        return loss
    if reduction == 'sum':
        return loss.sum()
    if reduction != 'mean':
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if avg_factor is None:
        return loss.mean()
    # eps keeps an empty batch (avg_factor 0) finite, as zero / eps = 0
    return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
