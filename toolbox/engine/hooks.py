"""Hooks: RNG state in checkpoints (exact resume), dataset class counts for the losses, the
model / data agreement check, and NIfTI output of volume predictions."""
import os
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper

from toolbox.datasets.class_counts import check_class_counts_support, dataset_class_counts
from toolbox.datasets.seeding import SeededDataset
from toolbox.engine.runner import to_safe_types
from toolbox.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the Python, NumPy and torch (CPU and CUDA) RNG states with every checkpoint and
    restore them on resume.

    mmengine restores model, optimizer, schedulers, iteration and (through the seeded sampler)
    the data order, but not the random generators that drive augmentation in the main process.
    Being the last hook before saving, it also converts the checkpoint to weights_only-safe
    types (see :mod:`toolbox.engine.runner`).
    """

    priority = 'LOWEST'  # runs last, so it can convert what other hooks added

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(python=random.getstate(), numpy=np.random.get_state(),
                     torch=torch.get_rng_state())
        if torch.cuda.is_available():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint.setdefault('meta', {})['rng_state'] = state
        checkpoint.update(to_safe_types(checkpoint))  # last hook: make it weights_only-loadable

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('rng_state')
        if state is None or not getattr(runner, '_resuming', False):
            return
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class ClassCountsHook(Hook):
    """Before training, pass the class counts of the training dataset to every module of the
    model that has ``set_class_counts`` (e.g. :class:`BalancedSoftmaxLoss`).

    The counts are :func:`toolbox.datasets.dataset_class_counts` of
    ``runner.train_dataloader.dataset``: a plain dataset's ``class_counts()``, the sum over the
    parts of a ``ConcatDataset`` (VOC07+12), and what one epoch draws through ``RepeatDataset``
    / ``ClassBalancedDataset`` (oversampled images count as often as the loader yields them,
    so a frequency-aware loss compensates the distribution it is trained on, not the one
    before resampling). A dataset without ``class_counts()`` raises ``TypeError`` naming its
    class; parts with different ``metainfo['classes']`` raise ``ValueError``; both are checked
    before anything is counted.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        try:
            check_class_counts_support(dataset)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f'ClassCountsHook: {exc}') from exc
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        targets = [(name, m) for name, m in model.named_modules()
                   if hasattr(m, 'set_class_counts')]
        if not targets:
            print_log('ClassCountsHook: no module of the model takes class counts',
                      logger='current')
            return
        counts = dataset_class_counts(dataset)
        for name, module in targets:
            module.set_class_counts(counts)
        print_log(f'ClassCountsHook: class counts of {type(dataset).__name__} set in '
                  f'{[name for name, _ in targets]}', logger='current')


@HOOKS.register_module()
class ValLossHook(Hook):
    """Validation loss: after each validation, the mean of every loss term over ``dataloader``.

    mmengine's validation loop computes metrics only. This hook runs the model in ``'loss'``
    mode (eval mode, no gradients) over a dataloader whose pipeline produces training-frame
    ground truth without random augmentation (typically the val split with the training
    pipeline minus flips and colour jitter), and logs ``val/<loss name>`` next to the metrics,
    so that ``tools/plot_log.py`` can draw train and val loss curves.

    Args:
        dataloader: a dataloader config, as ``val_dataloader``.
    """

    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL), which writes the val scalars

    def __init__(self, dataloader: dict):
        self.dataloader_cfg = dataloader
        self._dataloader = None

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._dataloader is None:
            self._dataloader = runner.build_dataloader(self.dataloader_cfg,
                                                       seed=runner.seed)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        was_training = model.training
        model.eval()
        totals, num_batches = {}, 0
        with torch.no_grad():
            for batch in self._dataloader:
                data = model.data_preprocessor(batch, training=False)
                _, log_vars = model.parse_losses(model(**data, mode='loss'))
                for name, value in log_vars.items():
                    totals[name] = totals.get(name, 0.0) + float(value)
                num_batches += 1
        model.train(was_training)
        for name, total in totals.items():
            runner.message_hub.update_scalar(f'val/{name}', total / max(num_batches, 1))


@HOOKS.register_module()
class ModelDataAgreementHook(Hook):
    """Before training (and before a test run), check that every classifying head of the
    model has as many classes as the dataset: a head with fewer would train the extra classes
    as background, one with more would waste logits silently. Added by ``build_runner``.

    The heads checked are the model's ``bbox_head``, ``roi_head``, ``decode_head`` and
    ``auxiliary_head`` (one or a list) that have ``num_classes``; the RPN (class-agnostic) is
    not. A dataset without ``metainfo['classes']`` is not checked.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_dataloader.dataset, 'training')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_dataloader.dataset, 'test')

    @staticmethod
    def _check(runner, dataset, split: str) -> None:
        if isinstance(dataset, SeededDataset):
            dataset = dataset.dataset
        classes = getattr(dataset, 'metainfo', {}).get('classes')
        if not classes:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if isinstance(model, BaseTTAModel):  # tools/test.py --tta: check the wrapped model
            model = model.module
        for name in ('bbox_head', 'roi_head', 'decode_head', 'auxiliary_head'):
            heads = getattr(model, name, None)
            heads = list(heads) if isinstance(heads, (list, tuple, torch.nn.ModuleList)) \
                else [heads]
            for k, head in enumerate(heads):
                num_classes = getattr(head, 'num_classes', None)
                if num_classes is None or num_classes == len(classes):
                    continue
                where = f'model.{name}' + (f'[{k}]' if len(heads) > 1 else '')
                raise ValueError(
                    f'{where}.num_classes is {num_classes} but the {split} dataset '
                    f'{type(dataset).__name__} has {len(classes)} classes {tuple(classes)}: set '
                    f'num_classes={len(classes)}, or give the dataset '
                    f'metainfo=dict(classes=(...)) to use a subset of its classes')


def nifti_case_name(path) -> str:
    """``.../hippocampus_001.nii.gz`` -> ``hippocampus_001`` (also ``.nii``)."""
    name = os.path.basename(str(path))
    for suffix in ('.nii.gz', '.nii'):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return os.path.splitext(name)[0]


def save_nifti_prediction(sample, out_dir: str) -> str:
    """Write ``sample.pred_sem_seg`` (a :class:`VolumeData` int64 (1, D, H, W) in the original
    frame, as :meth:`EncoderDecoder.postprocess` returns it) as ``out_dir/<case>.nii.gz``.

    ``<case>`` is the input file's name without ``.nii.gz`` (``img_path`` in the metainfo);
    the image carries the input's ``affine`` (4, 4), so the labels overlay the input volume in
    any viewer. Voxels are uint8 when every label fits (0..255), int16 otherwise. The file is
    written under a temporary name and renamed into place. Returns the path.
    """
    try:
        import nibabel
    except ImportError as exc:  # optional dependency (extra [medical])
        raise ImportError('writing NIfTI predictions needs nibabel: pip install nibabel '
                          '(or the toolbox extra [medical])') from exc
    meta = sample.metainfo
    where = meta.get('img_path', 'a test sample')
    if 'pred_sem_seg' not in sample or sample.pred_sem_seg.data.dim() != 4:
        raise ValueError(f'save_nifti_prediction: {where}: needs pred_sem_seg of a volume '
                         f'(1, D, H, W)')
    for key in ('img_path', 'affine'):
        if meta.get(key) is None:
            raise ValueError(f'save_nifti_prediction: {where}: metainfo has no {key!r} '
                             f"(add it to PackInputs' meta_keys)")
    labels = sample.pred_sem_seg.data[0].cpu().numpy()  # (D, H, W), the NIfTI (i, j, k) axes
    if 'ori_shape' in meta and tuple(labels.shape) != tuple(meta['ori_shape']):
        raise ValueError(f'save_nifti_prediction: {where}: prediction of shape '
                         f"{labels.shape} is not in the original frame {tuple(meta['ori_shape'])}")
    dtype = np.uint8 if labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255) \
        else np.int16
    image = nibabel.Nifti1Image(labels.astype(dtype), np.asarray(meta['affine'], np.float64))
    image.set_data_dtype(dtype)
    os.makedirs(out_dir, exist_ok=True)
    case = nifti_case_name(meta['img_path'])
    path = os.path.join(out_dir, f'{case}.nii.gz')
    tmp = os.path.join(out_dir, f'.{case}.{os.getpid()}.tmp.nii.gz')
    nibabel.save(image, tmp)
    os.replace(tmp, path)
    return path


@HOOKS.register_module()
class SaveNiftiHook(Hook):
    """After each test iteration, write every volume prediction as ``out_dir/<case>.nii.gz``
    with the input's affine (see :func:`save_nifti_prediction`); ``tools/test.py
    --save-nifti DIR`` adds it. mmengine's test loop keeps no predictions, so they are written
    as they come. Each process writes its own samples.

    Args:
        out_dir: the folder (created when missing).
    """

    priority = 'NORMAL'

    def __init__(self, out_dir: str):
        self.out_dir = str(out_dir)
        self.num_written = 0

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for sample in outputs or []:
            save_nifti_prediction(sample, self.out_dir)
            self.num_written += 1

    def after_test_epoch(self, runner, metrics=None) -> None:
        print_log(f'SaveNiftiHook: wrote {self.num_written} prediction(s) to {self.out_dir}',
                  logger='current')
