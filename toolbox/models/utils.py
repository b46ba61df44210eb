"""Small helpers shared by the model bases: unpacking data samples, DDP-averaged counts."""
from __future__ import annotations

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.structures import InstanceData


def unpack_gt_instances(data_samples) -> tuple[list, list, list[dict]]:
    """``(batch_gt_instances, batch_gt_instances_ignore, batch_img_metas)`` of a batch.

    ``batch_gt_instances_ignore[i]`` is the sample's ``ignored_instances`` (e.g. VOC
    ``difficult`` boxes) or ``None``; ``batch_img_metas[i]`` is its metainfo dict
    (``img_shape``, ``batch_input_shape``, ``scale_factor``, ...).
    """
    gts, ignores, metas = [], [], []
    for sample in data_samples:
        gts.append(sample.gt_instances)
        ignores.append(sample.ignored_instances if 'ignored_instances' in sample else None)
        metas.append(sample.metainfo)
    return gts, ignores, metas


def mean_over_processes(value: float, device) -> float:
    """Average a count over DDP processes so that every process normalises its loss alike."""
    if get_world_size() == 1:
        return float(value)
    tensor = torch.tensor(float(value), device=device)
    all_reduce(tensor, op='mean')
    return tensor.item()


def empty_instances(device, with_scores: bool = True) -> InstanceData:
    """An ``InstanceData`` with zero boxes (``bboxes`` (0, 4), ``labels`` (0,)[, ``scores``])."""
    results = InstanceData()
    results.bboxes = torch.zeros((0, 4), device=device)
    results.labels = torch.zeros((0,), dtype=torch.long, device=device)
    if with_scores:
        results.scores = torch.zeros((0,), device=device)
    return results


def to_float32(outputs):
    """``outputs`` (a tensor, or tuples / lists of them, nested) with every floating tensor of
    lower precision cast to float32; other values unchanged.

    Heads call it on their network outputs before losses and box decoding: under mixed
    precision (bf16 / fp16 autocast) the convolutions run in low precision, but a bf16 box
    coordinate near 1,000 px is only accurate to 4 px, and focal-loss terms of easy negatives
    underflow, so targets, losses and decoding stay in float32.
    """
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() and \
            outputs.dtype != torch.float32 and outputs.dtype != torch.float64 else outputs
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(to_float32(o) for o in outputs)
    return outputs
