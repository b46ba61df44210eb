"""Drawing predictions and ground truth on images, through mmengine's ``Visualizer``.

:class:`DetSegVisualizer` draws one data sample: boxes with class names (and scores, for
predictions) or a semantic map blended over the image with a legend of the classes present.
Ground truth and prediction are drawn side by side (ground truth left) when both are asked
for. Everything renders with matplotlib's Agg canvas (mmengine's ``Visualizer``), headless.

Conventions: images are RGB uint8 (H, W, 3); boxes ``xyxy`` absolute pixels in the frame of
that image (predictions in the original frame, as the detectors return them); semantic maps
(1, H, W) int labels, ``IGNORE_INDEX`` pixels left uncoloured. Class names come from the
sample's metainfo ``classes`` (set by :func:`toolbox.apis.inference`), else from
``dataset_meta['classes']`` (set by the hook, the tools, or the Runner's loops), else the
label index is written. Colours: ``dataset_meta['palette']`` (RGB per class) when it has
one, else :func:`class_colors`.
"""
from __future__ import annotations

import numpy as np
import torch
from mmengine.structures import InstanceData
from mmengine.visualization import Visualizer

from toolbox.registry import VISUALIZERS
from toolbox.structures import IGNORE_INDEX, VolumeData


def class_colors(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB: matplotlib's ``tab20`` cycled (distinct for 20 classes)."""
    from matplotlib import colormaps
    table = np.asarray(colormaps['tab20'].colors)  # (20, 3) floats in [0, 1]
    # even entries first: the saturated half of each tab20 pair, then the light half
    table = np.concatenate([table[0::2], table[1::2]])
    return (table[np.arange(num_classes) % len(table)] * 255).round().astype(np.uint8)


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


@VISUALIZERS.register_module()
class DetSegVisualizer(Visualizer):
    """mmengine ``Visualizer`` for detection and 2D semantic segmentation samples.

    Args:
        name: instance name (instances made directly are not registered globally).
        score_thr: predictions scoring below this are not drawn.
        line_width: box outline width in pixels.
        alpha: opacity of a segmentation overlay, in [0, 1].
        vis_backends, save_dir: as mmengine ``Visualizer`` (``add_datasample`` also sends the
            drawing to the backends).
    """

    def __init__(self, name: str = 'det_seg_visualizer', image: np.ndarray | None = None,
                 vis_backends=None, save_dir: str | None = None, score_thr: float = 0.3,
                 line_width: float = 2.0, alpha: float = 0.5):
        super().__init__(name=name, image=image, vis_backends=vis_backends, save_dir=save_dir)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'alpha must be in [0, 1], got {alpha}')
        self.score_thr = score_thr
        self.line_width = line_width
        self.alpha = alpha
        self.drawn_texts: dict[str, list[str]] = {}

    def class_names(self, num_needed: int, sample=None) -> list[str]:
        """Names of classes ``0..num_needed-1``: the sample's ``classes``, the dataset's, or
        the indices as text."""
        classes = None
        if sample is not None:
            classes = sample.metainfo.get('classes')
        if classes is None:
            classes = (self.dataset_meta or {}).get('classes')
        names = [str(c) for c in classes] if classes is not None else []
        return names + [str(k) for k in range(len(names), num_needed)]

    def colors(self, num_needed: int) -> np.ndarray:
        """(num_needed, 3) uint8 RGB, the dataset's palette where it has one."""
        colors = class_colors(num_needed)
        palette = (self.dataset_meta or {}).get('palette')
        if palette:
            given = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:num_needed]
            colors[:len(given)] = given
        return colors

    def draw_instances(self, instances: InstanceData, sample=None,
                       score_thr: float | None = None) -> list[str]:
        """Draw ``instances.bboxes`` (N, 4) with ``labels`` (N,) and, when present, ``scores``
        (N,) on the current image; boxes scoring below ``score_thr`` (default
        ``self.score_thr``) are skipped. Returns the label texts drawn, one per box drawn,
        ``'<class>'`` or ``'<class> <score:.2f>'``."""
        if 'bboxes' not in instances or len(instances) == 0:
            return []
        boxes = to_numpy(instances.bboxes).reshape(-1, 4).astype(np.float64)
        labels = to_numpy(instances.labels).reshape(-1).astype(np.int64)
        scores = to_numpy(instances.scores).reshape(-1) if 'scores' in instances else None
        if scores is not None:
            keep = scores >= (self.score_thr if score_thr is None else score_thr)
            boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
        # mmengine asserts x1 <= x2 and warns about any point at x >= width (a box clipped to
        # the image ends at x = width): keep drawn corners on the last pixel row / column
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, self.width - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, self.height - 1)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        if len(boxes) == 0:
            return []
        num_classes = int(labels.max()) + 1
        names = self.class_names(num_classes, sample)
        colors = [tuple(int(v) for v in c) for c in self.colors(num_classes)[labels]]
        texts = [names[k] for k in labels] if scores is None else \
            [f'{names[k]} {s:.2f}' for k, s in zip(labels, scores)]
        self.draw_bboxes(boxes, edge_colors=colors, line_widths=self.line_width, alpha=0.9)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        # small boxes get smaller text, as in mmdet: 0.6x below 32^2 px, 1x above 96^2 px
        scale = np.clip(0.6 + 0.4 * (areas - 32 ** 2) / (96 ** 2 - 32 ** 2), 0.6, 1.0)
        self.draw_texts(texts, boxes[:, :2] + self.line_width,
                        font_sizes=[int(self._default_font_size * s) for s in scale],
                        colors='white', vertical_alignments='top',
                        bboxes=[dict(facecolor=np.asarray(c) / 255, alpha=0.7, pad=0.7,
                                     edgecolor='none') for c in colors])
        return texts

    def draw_sem_seg(self, sem_seg, sample=None, legend: bool = True) -> list[str]:
        """Blend the (1, H, W) or (H, W) label map ``sem_seg`` (a tensor, array or
        ``PixelData``) over the current image with opacity ``self.alpha``; ignored pixels
        (``IGNORE_INDEX``) keep the image. Draws a legend of the classes present (top left).
        Returns the names of the classes present, in label order."""
        if isinstance(sem_seg, VolumeData):
            raise ValueError('DetSegVisualizer draws 2D maps; for volumes (3D segmentation) '
                             'use tools/visualize_seg.py, which draws slices')
        seg = to_numpy(getattr(sem_seg, 'data', sem_seg))
        seg = seg.reshape(seg.shape[-2:]).astype(np.int64)
        image = self._image
        if seg.shape != image.shape[:2]:
            raise ValueError(f'label map of shape {seg.shape} does not fit the image '
                             f'{image.shape[:2]}')
        valid = (seg >= 0) & (seg != IGNORE_INDEX)
        present = np.unique(seg[valid])
        if present.size == 0:
            return []
        colors = self.colors(int(present.max()) + 1)
        painted = colors[np.where(valid, seg, 0)].astype(np.float64)
        blended = np.where(valid[..., None],
                           (1 - self.alpha) * image + self.alpha * painted, image)
        self.set_image(blended.round().astype(np.uint8))
        names = self.class_names(int(present.max()) + 1, sample)
        present_names = [names[k] for k in present]
        if legend:
            self._draw_legend(present_names, colors[present])
        return present_names

    def _draw_legend(self, names: list[str], colors: np.ndarray) -> None:
        size = float(self._default_font_size)
        rows = np.arange(len(names), dtype=np.float64)
        tops = 4 + rows * (size * 1.6)
        squares = np.stack([np.full_like(tops, 4), tops, np.full_like(tops, 4 + size),
                            tops + size], axis=1)
        self.draw_bboxes(squares, edge_colors='white', line_widths=1,
                         face_colors=[tuple(int(v) for v in c) for c in colors], alpha=1.0)
        self.draw_texts(names, squares[:, [2, 1]] + np.array([4.0, 0.0]),
                        font_sizes=int(size), colors='white', vertical_alignments='top',
                        bboxes=dict(facecolor='black', alpha=0.5, pad=0.5, edgecolor='none'))

    def draw_one(self, image: np.ndarray, sample, which: str,
                 score_thr: float | None = None) -> tuple[np.ndarray, list[str]]:
        """Draw ``which`` (``'gt'`` or ``'pred'``) of ``sample`` on a copy of ``image``.

        Returns the drawn RGB image (H, W, 3) and the label texts (boxes) or class names
        (segmentation) drawn."""
        self.set_image(image)
        texts = []
        sem_seg = getattr(sample, f'{which}_sem_seg', None)
        if sem_seg is not None:  # first: the overlay replaces the image, boxes go on top
            if not isinstance(sem_seg, VolumeData):
                # ground truth padded with the batch: crop it to the image, as IoUMetric does
                sem_seg = sem_seg.data[..., :image.shape[0], :image.shape[1]]
            texts += self.draw_sem_seg(sem_seg, sample)
        instances = getattr(sample, f'{which}_instances', None)
        if instances is not None:
            texts += self.draw_instances(instances, sample,
                                         score_thr if which == 'pred' else 0.0)
        return self.get_image(), texts

    def add_datasample(self, name: str, image: np.ndarray, data_sample=None,
                       draw_gt: bool = True, draw_pred: bool = True, show: bool = False,
                       wait_time: float = 0, out_file: str | None = None,
                       pred_score_thr: float | None = None, step: int = 0) -> np.ndarray:
        """Draw a sample's ground truth (left) and prediction (right), or whichever of the
        two exists and is asked for; save to ``out_file`` (any format OpenCV writes) and send
        to the backends. ``image`` is RGB (H, W, 3) in the frame of the sample's boxes / maps.
        The label texts drawn are kept in ``self.drawn_texts`` (``{'gt': [...], 'pred':
        [...]}``). Returns the drawing, RGB uint8."""
        import mmcv
        image = np.ascontiguousarray(image, dtype=np.uint8)
        panels, self.drawn_texts = [], {}
        for which, wanted in (('gt', draw_gt), ('pred', draw_pred)):
            has = data_sample is not None and any(
                f'{which}_{field}' in data_sample for field in ('instances', 'sem_seg'))
            if wanted and has:
                drawn, self.drawn_texts[which] = self.draw_one(image, data_sample, which,
                                                               pred_score_thr)
                panels.append(drawn)
        drawing = np.concatenate(panels, axis=1) if panels else image
        self.set_image(drawing)
        if show:
            self.show(drawing, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(drawing[..., ::-1], out_file)  # mmcv writes BGR
        else:
            self.add_image(name, drawing, step)
        return drawing
