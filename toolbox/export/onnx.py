"""ONNX export of a built model and its check against PyTorch with onnxruntime.

    model = init_model('configs/retinanet_r18_fpn_160_demo.py', 'epoch_24.pth')
    export_onnx(model, 'retinanet.onnx', img_hw=(160, 160), dynamic_batch=True)
    images, source = sample_images(model.cfg, (160, 160))
    report = verify_onnx('retinanet.onnx', model, images)  # raises ExportMismatchError

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` (opset 17 by
default). Post-processing needs ``torchvision.ops.nms``, which torchvision maps to ONNX
``NonMaxSuppression`` for that exporter only; the ``torch.export`` (dynamo) exporter of torch
2.14 has no translation for ``torchvision::nms`` and would need onnxscript besides. The graph
has a fixed image size (anchors and padding are constants) and, with ``dynamic_batch``, a
symbolic batch size; the data-dependent part (candidates above the score threshold, NMS
survivors) uses ``NonZero`` / ``NonMaxSuppression``, so one graph serves any number of
detections. Inputs and outputs: :mod:`toolbox.export.wrappers`.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope

from toolbox.structures import DataSample

from .wrappers import build_export_module

DEFAULT_OPSET = 17
#: default tolerances: scores / logits (absolute) and box coordinates (pixels, absolute)
SCORE_ATOL = 1e-4
BOX_ATOL = 1e-3


class ExportMismatchError(RuntimeError):
    """onnxruntime and PyTorch disagree beyond the tolerance."""


def export_onnx(model, path: str | Path, img_hw: tuple[int, int], dynamic_batch: bool = False,
                opset: int = DEFAULT_OPSET) -> torch.nn.Module:
    """Export ``model`` (detector or segmentor, see :mod:`toolbox.export.wrappers`) for
    images of size ``img_hw = (H, W)`` to ``path``; returns the exported module.

    The graph's input is ``images`` (B, C, H, W) float; B is 1, or symbolic
    (``'batch'``) with ``dynamic_batch`` (then traced at batch 2, so that nothing specialises
    on a batch of one). Raises :class:`~toolbox.export.wrappers.UnsupportedModelError` for a
    model kind that is not exported.
    """
    model.eval()
    module = build_export_module(model, tuple(img_hw)).eval()
    batch = 2 if dynamic_batch else 1
    example = torch.rand(batch, module.preprocess.in_channels, *img_hw,
                         generator=torch.Generator().manual_seed(0)) * 255
    names = list(module.output_names)
    dynamic_axes = {name: {0: 'batch'} for name in ['images'] + names} if dynamic_batch \
        else None
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of torch.export (see the module
        # docstring for why it is the one that exports NMS)
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', category=FutureWarning)
        # shape checks (of boxes, of a resize's size) that are constants at a fixed image size
        for module_name in (r'toolbox\.structures\.boxes', r'toolbox\.models\.bases\.decode_head'):
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning,
                                    module=module_name)
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=['images'], output_names=names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    return module


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU ``InferenceSession`` (``threads``: intra-op threads, default ORT's)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def run_onnx(session, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Outputs of an exported graph for ``images`` (B, C, H, W), by output name."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {'images': images.float().numpy()})))


@torch.no_grad()
def torch_outputs(model, images: torch.Tensor) -> dict[str, np.ndarray]:
    """The toolbox's own test-time path (``model.test_step``: data preprocessor, network,
    ``predict``) for ``images`` (B, C, H, W) taken as pipeline outputs of that size, in the
    exported graph's output format (detections padded to ``max_det``, see
    :mod:`toolbox.export.wrappers`)."""
    h, w = images.shape[-2:]
    samples = [DataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
               for _ in range(images.shape[0])]
    results = model.test_step(dict(inputs=list(images.float()), data_samples=samples))
    if 'pred_instances' in results[0]:
        preds = [r.pred_instances for r in results]
        max_det = max(max(len(p) for p in preds), 1)
        out = dict(boxes=np.zeros((len(preds), max_det, 4), np.float32),
                   scores=np.zeros((len(preds), max_det), np.float32),
                   labels=np.full((len(preds), max_det), -1, np.int64),
                   num_dets=np.array([len(p) for p in preds], np.int64))
        for b, pred in enumerate(preds):
            n = len(pred)
            out['boxes'][b, :n] = pred.bboxes.numpy()
            out['scores'][b, :n] = pred.scores.numpy()
            out['labels'][b, :n] = pred.labels.numpy()
        return out
    logits = torch.stack([r.seg_logits.data for r in results])
    return dict(seg_logits=logits.numpy(), seg_map=logits.argmax(1).numpy())


def _pair_detections(ours: dict, ref: dict) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairing of two equally long detection lists (``boxes`` (N, 4), ``scores``
    (N,), ``labels`` (N,)) minimising the largest box-coordinate difference plus the score
    difference, a pair of different labels costing more than any other; returns the index
    arrays. Sorting both by score would mis-pair detections whose scores tie to the last bits
    (which the two runtimes may order either way)."""
    from scipy.optimize import linear_sum_assignment
    cost = np.abs(ours['boxes'][:, None] - ref['boxes'][None]).max(-1) \
        + np.abs(ours['scores'][:, None] - ref['scores'][None])
    cost = cost + (ours['labels'][:, None] != ref['labels'][None]) * (cost.max() + 1)
    return linear_sum_assignment(cost)


def compare_outputs(onnx_out: dict, torch_out: dict) -> dict:
    """Differences between two output dicts of the same kind.

    Detections: ``num_dets_onnx`` / ``num_dets_torch`` (per image), and over the images whose
    counts agree, with the detections paired one to one (:func:`_pair_detections`),
    ``max_box_diff``, ``max_score_diff`` (absolute) and ``labels_equal``. Segmentation:
    ``max_logit_diff`` and ``argmax_agreement`` (fraction of equal pixels of ``seg_map``).
    """
    if 'num_dets' not in onnx_out:
        return dict(max_logit_diff=float(np.abs(onnx_out['seg_logits']
                                                - torch_out['seg_logits']).max()),
                    argmax_agreement=float((onnx_out['seg_map'] == torch_out['seg_map']).mean()))
    report = dict(num_dets_onnx=onnx_out['num_dets'].tolist(),
                  num_dets_torch=torch_out['num_dets'].tolist(),
                  max_box_diff=0.0, max_score_diff=0.0, labels_equal=True)
    for b, (n_onnx, n_torch) in enumerate(zip(report['num_dets_onnx'],
                                              report['num_dets_torch'])):
        if n_onnx != n_torch or n_onnx == 0:
            continue
        ours, ref = ({k: out[k][b, :n_onnx] for k in ('boxes', 'scores', 'labels')}
                     for out in (onnx_out, torch_out))
        i, j = _pair_detections(ours, ref)
        report['max_box_diff'] = max(report['max_box_diff'], float(
            np.abs(ours['boxes'][i] - ref['boxes'][j]).max()))
        report['max_score_diff'] = max(report['max_score_diff'], float(
            np.abs(ours['scores'][i] - ref['scores'][j]).max()))
        report['labels_equal'] &= bool((ours['labels'][i] == ref['labels'][j]).all())
    return report


def check_report(report: dict, score_atol: float = SCORE_ATOL, box_atol: float = BOX_ATOL
                 ) -> None:
    """Raise :class:`ExportMismatchError` naming what disagrees beyond the tolerances:
    detection counts, labels, boxes (``box_atol`` pixels), scores or logits (``score_atol``)."""
    problems = []
    if 'num_dets_onnx' in report:
        if report['num_dets_onnx'] != report['num_dets_torch']:
            problems.append(f"detections per image: onnxruntime {report['num_dets_onnx']}, "
                            f"PyTorch {report['num_dets_torch']}")
        if not report['labels_equal']:
            problems.append('labels differ (detections sorted by score)')
        if report['max_box_diff'] > box_atol:
            problems.append(f"boxes differ by up to {report['max_box_diff']:.3g} px "
                            f"(tolerance {box_atol:g})")
        if report['max_score_diff'] > score_atol:
            problems.append(f"scores differ by up to {report['max_score_diff']:.3g} "
                            f"(tolerance {score_atol:g})")
    elif report['max_logit_diff'] > score_atol:
        problems.append(f"logits differ by up to {report['max_logit_diff']:.3g} (tolerance "
                        f"{score_atol:g}; argmax maps agree on "
                        f"{100 * report['argmax_agreement']:.4f} % of pixels)")
    if problems:
        raise ExportMismatchError('the exported graph disagrees with PyTorch: '
                                  + '; '.join(problems))


def verify_onnx(path: str | Path, model, images: torch.Tensor,
                score_atol: float = SCORE_ATOL, box_atol: float = BOX_ATOL) -> dict:
    """Run the exported graph with onnxruntime and the model with PyTorch on ``images``
    (B, C, H, W), compare (:func:`compare_outputs`) and raise :class:`ExportMismatchError`
    beyond the tolerances; returns the report."""
    report = compare_outputs(run_onnx(onnx_session(path), images),
                             torch_outputs(model.eval(), images))
    check_report(report, score_atol, box_atol)
    return report


def default_image_size(cfg) -> tuple[int, int] | None:
    """``(H, W)`` of the test pipeline's ``Resize`` (its ``scale`` is ``(w, h)``), else the
    size of the first test image after the test pipeline, else ``None`` (no data)."""
    for step in cfg.test_dataloader.dataset.pipeline:
        scale = step.get('scale') if step['type'] == 'Resize' else None
        if scale is not None:
            scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
            return int(scale[1]), int(scale[0])
    from toolbox.apis.inference import _test_pipeline
    try:
        path = first_test_images(cfg, 1)[0]
    except (OSError, ValueError, KeyError):
        return None
    return tuple(_test_pipeline(cfg)(dict(img_path=path, img_id=0))['inputs'].shape[-2:])


def first_test_images(cfg, count: int) -> list[str]:
    """The first ``count`` image paths of the config's test dataset; raises ``OSError`` (the
    data is absent) or ``ValueError`` / ``KeyError`` (a dataset that cannot be read)."""
    from toolbox.registry import DATASETS
    with DefaultScope.overwrite_default_scope('toolbox'):
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
    if len(dataset) == 0:
        raise ValueError('the test dataset is empty')
    return [dataset.get_data_info(k % len(dataset))['img_path'] for k in range(count)]


def sample_images(cfg, img_hw: tuple[int, int], batch: int = 1, seed: int = 0
                  ) -> tuple[torch.Tensor, str]:
    """A (batch, 3, H, W) float input and where it came from: the first test images of the
    config through its test pipeline (without the annotation steps), resized bilinearly to
    ``img_hw``; random pixels (uniform 0..255, ``seed``) when the data is absent."""
    from toolbox.apis.inference import _test_pipeline
    try:
        paths = first_test_images(cfg, batch)
    except (OSError, ValueError, KeyError) as err:
        images = torch.rand(batch, 3, *img_hw, generator=torch.Generator().manual_seed(seed))
        return images * 255, f'random pixels (no test image: {err})'
    pipeline = _test_pipeline(cfg)
    images = []
    for k, path in enumerate(paths):
        image = pipeline(dict(img_path=path, img_id=k))['inputs'].float()[None]
        images.append(F.interpolate(image, size=tuple(img_hw), mode='bilinear',
                                    align_corners=False))
    return torch.cat(images), f'test image(s) {", ".join(paths)}'


__all__ = ['BOX_ATOL', 'DEFAULT_OPSET', 'SCORE_ATOL', 'ExportMismatchError', 'check_report',
           'compare_outputs', 'default_image_size', 'export_onnx', 'first_test_images',
           'onnx_session', 'run_onnx', 'sample_images', 'torch_outputs', 'verify_onnx']
