"""Collate functions (registered in ``FUNCTIONS``, used as ``collate_fn=dict(type=...)``)."""
from __future__ import annotations

from collections.abc import Sequence

from mmengine.dataset import pseudo_collate

from toolbox.registry import FUNCTIONS


@FUNCTIONS.register_module()
def flatten_collate(data_batch: Sequence) -> dict:
    """mmengine's ``pseudo_collate`` after flattening multi-sample items.

    A pipeline whose crop draws several samples from one item (``RandCropByPosNegLabel
    (num_samples=k)``, MONAI's ``num_samples``) returns a *list* of packed samples for that
    item; each element becomes one sample of the batch, so a loader with ``batch_size=b``
    yields ``b * k`` samples (the UNETR BTCV recipe: batch 1 x 4 crops of one volume). Items
    that are single samples pass unchanged, so this equals ``pseudo_collate`` otherwise.
    """
    flat = []
    for item in data_batch:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return pseudo_collate(flat)
