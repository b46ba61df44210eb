"""Saving pictures of predictions during validation and testing."""
from __future__ import annotations

import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from toolbox.registry import HOOKS
from toolbox.visualization.visualizer import DetSegVisualizer


def read_rgb(path: str):
    """The image file at ``path`` as RGB uint8 (H, W, 3)."""
    import mmcv
    return mmcv.imread(path, channel_order='rgb')


@HOOKS.register_module()
class PredictionVisualizationHook(Hook):
    """Draw the predictions (next to the ground truth) of the first ``num_images`` validation
    images every ``interval`` validations, and of the first ``num_images`` test images.

    Files: ``<out_dir>/epoch_<e>/<image name>.png`` (``iter_<i>`` for iteration-based
    training) after a validation, ``<out_dir>/<image name>.png`` after a test iteration;
    ``out_dir`` defaults to ``<work_dir>/vis``. Images are read again from each sample's
    ``img_path`` (predictions are in the original image's frame); a sample without one is
    skipped, and the number skipped is logged. Drawn by the main process (its own samples).

    Config: ``custom_hooks=[dict(type='PredictionVisualizationHook', num_images=4,
    interval=1)]``; ``tools/test.py --show-dir DIR`` adds one for every test image.

    Args:
        num_images: images drawn per validation / test run; ``None`` draws every image.
        interval: draw after every ``interval``-th validation.
        score_thr: predictions scoring below this are not drawn.
        out_dir: where the pictures go (default ``<work_dir>/vis``).
        draw_gt: draw the ground truth next to the prediction when the sample has one.
    """

    priority = 'NORMAL'

    def __init__(self, num_images: int | None = 4, interval: int = 1, score_thr: float = 0.3,
                 out_dir: str | None = None, draw_gt: bool = True):
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        if num_images is not None and num_images < 0:
            raise ValueError(f'num_images must be >= 0 or None, got {num_images}')
        self.num_images = num_images
        self.interval = interval
        self.score_thr = score_thr
        self.out_dir = out_dir
        self.draw_gt = draw_gt
        self.visualizer = DetSegVisualizer(name=f'prediction_visualization_{id(self)}',
                                           score_thr=score_thr)
        self.num_validations = 0
        self.written: list[str] = []
        self._num_skipped = 0

    def _start(self, runner, dataloader) -> None:
        dataset = dataloader.dataset
        self.visualizer.dataset_meta = dict(getattr(dataset, 'metainfo', {}) or {})
        self.written, self._num_skipped = [], 0

    def before_val_epoch(self, runner) -> None:
        self.num_validations += 1
        self._start(runner, runner.val_dataloader)

    def before_test_epoch(self, runner) -> None:
        self._start(runner, runner.test_dataloader)

    def _root(self, runner) -> str:
        return self.out_dir or osp.join(runner.work_dir, 'vis')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.num_validations % self.interval:
            return
        # which loop runs decides the folder name; read without building a loop that the
        # config defines but this run does not use
        by_epoch = isinstance(getattr(runner, '_train_loop', None), EpochBasedTrainLoop)
        folder = f'epoch_{runner.epoch}' if by_epoch else f'iter_{runner.iter}'
        self._draw(outputs, osp.join(self._root(runner), folder))

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._draw(outputs, self._root(runner))

    def _draw(self, outputs, folder: str) -> None:
        if not is_main_process():
            return
        for sample in outputs or []:
            if self.num_images is not None and len(self.written) >= self.num_images:
                return
            path = sample.metainfo.get('img_path')
            if not path:
                self._num_skipped += 1
                continue
            os.makedirs(folder, exist_ok=True)
            out_file = osp.join(folder, osp.splitext(osp.basename(path))[0] + '.png')
            self.visualizer.add_datasample(osp.basename(path), read_rgb(path), sample,
                                           draw_gt=self.draw_gt, out_file=out_file,
                                           pred_score_thr=self.score_thr)
            self.written.append(out_file)

    def _report(self) -> None:
        if self.written or self._num_skipped:
            skipped = f', skipped {self._num_skipped} without img_path' \
                if self._num_skipped else ''
            print_log(f'PredictionVisualizationHook: wrote {len(self.written)} picture(s) to '
                      f'{osp.dirname(self.written[-1]) if self.written else "nowhere"}'
                      f'{skipped}', logger='current')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._report()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._report()
