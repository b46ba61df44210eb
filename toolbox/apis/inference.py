"""Inference API: a model from a config (and checkpoint), predictions for images.

    model = init_model('configs/retinanet_r18_fpn_160_demo.py', 'work_dirs/.../epoch_24.pth')
    results = inference(model, ['a.jpg', image_bgr_array])
    results[0].pred_instances.bboxes  # (N, 4) xyxy in the original image's pixels

Images go through the config's test pipeline without its annotation steps; checkpoints are
loaded with ``weights_only=True``.
"""
from __future__ import annotations

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from toolbox.engine.runner import load_checkpoint_file
from toolbox.engine.setup import load_config
from toolbox.plugins import load_plugins
from toolbox.registry import MODELS, TRANSFORMS

# test-pipeline steps that need ground truth, left out at inference
ANNOTATION_STEPS = ('LoadAnnotations', 'RemapLabels')


def init_model(config, checkpoint: str | None = None, device: str = 'cpu',
               fuse_conv_bn: bool = False):
    """Build ``config.model`` (a path or an mmengine ``Config``), load ``checkpoint`` if given,
    put it in eval mode on ``device``; ``fuse_conv_bn=True`` then folds each BatchNorm into the
    convolution before it (:func:`toolbox.models.layers.fuse_conv_bn`: same predictions to
    float rounding, faster). The config's test pipeline is kept as ``model.cfg``;
    ``model.dataset_meta`` (``classes``, ``palette`` if any) comes from the checkpoint's
    ``meta.dataset_meta`` (the training set's, saved by the Runner), else from the config's
    test dataset (its ``metainfo``, else its class's ``METAINFO``)."""
    import toolbox  # noqa: F401  (registers the core)
    load_plugins()
    cfg = load_config(config) if isinstance(config, str) else config
    model = MODELS.build(cfg.model)
    saved_meta = None
    if checkpoint is not None:
        state = load_checkpoint_file(checkpoint)
        saved_meta = (state.get('meta') or {}).get('dataset_meta')
        missing, unexpected = model.load_state_dict(state.get('state_dict', state), strict=False)
        if missing or unexpected:
            raise KeyError(f'{checkpoint} does not fit {cfg.model.type}: missing '
                           f'{missing[:5]}, unexpected {unexpected[:5]}')
    model.dataset_meta = dict(saved_meta) if saved_meta and saved_meta.get('classes') \
        else _config_dataset_meta(cfg)
    model.cfg = cfg
    model = model.to(device).eval()
    if fuse_conv_bn:
        from toolbox.models.layers import fuse_conv_bn as fold_norms
        fold_norms(model)
    return model


def _config_dataset_meta(cfg) -> dict:
    """``classes`` (and ``palette``) of the config's test dataset: its ``metainfo``, else its
    class's ``METAINFO``, else (COCO json: the names are in the annotation file) the built
    dataset's; ``{}`` when the annotations cannot be read here (labels stay indices)."""
    import inspect

    from toolbox.registry import DATASETS
    dataset = dict((cfg.get('test_dataloader') or {}).get('dataset') or {})
    meta = dict(dataset.get('metainfo') or {})
    if not meta.get('classes') and isinstance(dataset.get('type'), str):
        with DefaultScope.overwrite_default_scope('toolbox'):
            dataset_class = DATASETS.get(dataset['type'])
            meta = {**getattr(dataset_class, 'METAINFO', {}), **meta}
            if not meta.get('classes'):
                dataset['pipeline'] = []
                if 'data_check' in inspect.signature(dataset_class.__init__).parameters:
                    dataset['data_check'] = False  # the names only: no image is read
                try:
                    meta = dict(DATASETS.build(dataset).metainfo)
                except (OSError, ValueError, KeyError):
                    meta = {}
    return {key: meta[key] for key in ('classes', 'palette') if meta.get(key)}


def _test_pipeline(cfg) -> Compose:
    steps = [dict(step) for step in cfg.test_dataloader.dataset.pipeline
             if step['type'] not in ANNOTATION_STEPS]
    with DefaultScope.overwrite_default_scope('toolbox'):
        return Compose([TRANSFORMS.build(step) for step in steps])


@torch.no_grad()
def inference(model, images) -> list:
    """Predict for one image or a list (file paths or BGR uint8 (H, W, 3) arrays).

    Returns data samples with ``pred_instances`` (detectors) or ``pred_sem_seg`` (segmentors)
    in the frame of each original image; their metainfo carries ``classes`` (the names of the
    labels, from ``model.dataset_meta``) when the model knows them.
    """
    single = not isinstance(images, (list, tuple))
    images = [images] if single else list(images)
    pipeline = _test_pipeline(model.cfg)
    samples = []
    for k, image in enumerate(images):
        if isinstance(image, np.ndarray):
            # an array enters after LoadImageFromFile, with the metainfo that step would set
            steps = [t for t in pipeline.transforms if type(t).__name__ != 'LoadImageFromFile']
            results = dict(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2],
                           img_id=k, img_path=None)
            for step in steps:
                results = step(results)
            samples.append(results)
        else:
            samples.append(pipeline(dict(img_path=str(image), img_id=k)))
    outputs = model.test_step(pseudo_collate(samples))
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
    if classes:
        for output in outputs:
            output.set_metainfo(dict(classes=tuple(classes)))
    return outputs[0] if single else outputs
