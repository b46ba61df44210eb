"""Reduction shared by every loss plugin (element weights, ``reduction`` and ``avg_factor``) and
the check that a head's losses take the keywords the head passes."""
from __future__ import annotations

import inspect

import torch
from torch import nn


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


# The keywords a head passes to its losses (docs/plugins.md, "Losses"): detection heads call
# ``loss(pred, target, weight=..., avg_factor=...)``, decode heads
# ``loss(logits, labels, ignore_index=...)``.
DETECTION_LOSS_KEYWORDS = ('weight', 'avg_factor')
DECODE_LOSS_KEYWORDS = ('ignore_index',)


def missing_loss_keywords(loss: nn.Module, keywords: tuple[str, ...]) -> list[str]:
    """The ``keywords`` that ``loss.forward`` cannot take (none when it has ``**kwargs``)."""
    params = inspect.signature(loss.forward).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return [k for k in keywords if k not in accepted]


def check_loss_contract(model: nn.Module) -> None:
    """Check, once the model is built, that every loss a head owns takes the keywords the
    head calls it with; otherwise the first training step fails deep inside the head with
    ``forward() got an unexpected keyword argument 'avg_factor'``.

    A head's losses are its children named ``loss_*`` (``loss_cls``, ``loss_bbox``,
    ``loss_decode``, ...); those of a :class:`~toolbox.models.bases.BaseDecodeHead` must take
    :data:`DECODE_LOSS_KEYWORDS`, all others :data:`DETECTION_LOSS_KEYWORDS`. Losses nested
    inside a loss are the outer loss's business and are not checked.

    Raises:
        TypeError: naming the loss's place in the model, its class and module, the missing
            keywords and the signature it has.
    """
    from toolbox.models.bases import BaseDecodeHead

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f'{prefix}.{name}' if prefix else name
            if not name.startswith('loss_'):
                visit(child, path)
                continue
            keywords = DECODE_LOSS_KEYWORDS if isinstance(module, BaseDecodeHead) \
                else DETECTION_LOSS_KEYWORDS
            missing = missing_loss_keywords(child, keywords)
            if missing:
                call = ', '.join(f'{k}=...' for k in keywords)
                cls = type(child)
                raise TypeError(
                    f'{path} ({cls.__name__} from {cls.__module__}) cannot take the keyword(s) '
                    f'{missing} that {type(module).__name__} passes: its forward is '
                    f'{cls.__name__}.forward{inspect.signature(child.forward)}, the head calls '
                    f'loss(pred, target, {call}). Add them to forward (see the loss contract '
                    f'in docs/plugins.md; toolbox.models.loss_utils.weight_reduce_loss applies '
                    f'weight and avg_factor).')

    visit(model, '')
