"""What every detector kind does with predictions and losses."""
from __future__ import annotations

from toolbox.structures.boxes import boxes_to_original


def attach_predictions(data_samples, results):
    """Map each result's ``bboxes`` from the network input frame to the original image (undo
    the flip, then the resize, clip to ``ori_shape``) and store it as ``pred_instances``.

    Returns the data samples.
    """
    for sample, instances in zip(data_samples, results):
        instances.bboxes = boxes_to_original(instances.bboxes, sample.metainfo)
        sample.pred_instances = instances
    return data_samples


def prefix_losses(losses: dict, prefix: str) -> dict:
    """``{'loss_cls': x}`` -> ``{'loss_rpn_cls': x}`` for ``prefix='rpn'`` (other keys, e.g.
    accuracies, get ``prefix_`` in front)."""
    out = {}
    for key, value in losses.items():
        if key.startswith('loss_'):
            out[f'loss_{prefix}_{key[len("loss_"):]}'] = value
        else:
            out[f'{prefix}_{key}'] = value
    return out
