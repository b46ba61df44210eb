"""Mixed precision, memory format and CPU float settings, chosen by the config (``precision``,
``channels_last``, ``num_threads``, ``flush_denormal``) or by ``tools/train.py --amp`` /
``tools/test.py --amp``.

``precision``:
  * ``'fp32'`` (default): nothing changes;
  * ``'bf16'``: forward and loss under ``torch.autocast(dtype=torch.bfloat16)`` on the model's
    device, CPU or GPU (:class:`AutocastOptimWrapper`; bf16 has fp32's exponent range, so no
    loss scaling), and validation / test under autocast (mmengine's ``fp16`` loop flag, which
    is bf16 on a CPU). On a CPU without bf16 matrix units (no ``avx512_bf16`` / ``amx_bf16``
    flag) bf16 is emulated and slower than fp32: the option says so and falls back to fp32.
    With ``avx512_bf16`` but no AMX the gain depends on the chip (measured in NCHW: 1.9x fp32
    on a 2-core AMD EPYC, 0.7x on a 2-core Intel Xeon VM that hides AMX), so a 3x3
    convolution is timed once per process (:func:`cpu_bf16_speedup`, about 0.3 s; bf16
    channels-last against fp32 NCHW, the defaults) and bf16 falls back to fp32, saying so,
    where it is slower. With AMX it always pays (forward 4.3x, training step 3.7x on a 2-core
    Xeon);
  * ``'fp16'``: CUDA only, mmengine's ``AmpOptimWrapper`` with dynamic loss scaling;
  * ``'amp'``: ``'fp16'`` on a GPU, ``'bf16'`` on a CPU.

Heads cast their outputs to float32 before targets, losses and box decoding
(:func:`toolbox.models.utils.to_float32`): only the network runs in low precision.

``flush_denormal`` (default ``True``): subnormal floats (below 1.2e-38 in fp32) are read and
written as zero on the CPU (``torch.set_flush_denormal``, x86 FTZ / DAZ). x86 cores take a
microcode path for every subnormal operand, and gradients reach that range once a model
trains: a Faster R-CNN R50-FPN step at 2x512x512 went from 7 s to 20-47 s after five SGD
steps on a 2-core Xeon (convolution backward 4x, ``mm`` 10x, RoIAlign backward 4x slower),
and stayed at 7-8 s with flushing. The values flushed are far below fp32's resolution of any
weight or activation a model uses. The flags are per thread: :func:`set_flush_denormal` also
restarts torch's OpenMP workers so that they carry them.

``channels_last = True`` stores the model's 4-D weights in NHWC order
(``torch.channels_last``) and the data preprocessor emits NHWC batches, the layout oneDNN's and
cuDNN's fastest convolution kernels use; results agree with NCHW to float rounding. Unset
(``None``), it is on for bf16 on a CPU and off otherwise: oneDNN's bf16 kernels (AMX tiles)
work on NHWC, and from NCHW every convolution reorders its input and output. On a 2-core Xeon
with AMX the RetinaNet R50-FPN forward at 800x1216 took 1.46 s in bf16 NCHW and 0.43 s in bf16
NHWC (fp32 NCHW 1.89 s; ``benchmarks/bench_detectors.py --only precision``), a 2x512x512
training step 2.00 s and 0.87 s (fp32 3.24 s). Set ``channels_last = False`` to keep NCHW.

``fuse_conv_bn = True`` folds every eval-mode BatchNorm into the convolution before it when a
test starts (``tools/test.py --fuse-conv-bn``; :func:`toolbox.models.layers.fuse_conv_bn`);
training and validation during training are unaffected.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import statistics
import time
import warnings

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper

from toolbox.registry import HOOKS, OPTIM_WRAPPERS

PRECISIONS = ('fp32', 'bf16', 'fp16', 'amp')


def cpu_bf16_units(cpuinfo: str = '/proc/cpuinfo') -> list[str]:
    """The CPU's bf16 matrix-unit flags (``avx512_bf16``, ``amx_bf16``) listed in ``cpuinfo``;
    empty when it has none or the file is unreadable (non-Linux)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(':', 1)[1].split() for line in f
                          if line.startswith('flags')), [])
    except OSError:
        return []
    return [flag for flag in ('avx512_bf16', 'amx_bf16') if flag in flags]


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(channels: int = 256, size: int = 64, repeats: int = 5) -> float:
    """fp32 time over bf16-autocast time of one 3x3 convolution (``channels`` in and out, a
    1 x ``channels`` x ``size`` x ``size`` input: the shape of a detector's FPN / head convs),
    each in the memory format it runs in by default (fp32 NCHW, bf16 channels-last), medians of
    ``repeats`` runs after a warm-up, on this process's threads; cached, so measured once per
    process. Above 1: bf16 pays on this CPU."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.randn(1, channels, size, size)
    conv_nhwc = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)

    def median_time(autocast: bool) -> float:
        layer, inputs = (conv_nhwc, x_nhwc) if autocast else (conv, x)
        times = []
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            for i in range(repeats + 1):
                start = time.perf_counter()
                layer(inputs)
                if i:  # the first call is the warm-up (oneDNN kernel creation)
                    times.append(time.perf_counter() - start)
        return statistics.median(times)

    return median_time(False) / median_time(True)


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` with the forward and loss of each training step under
    ``torch.autocast(<model device>, dtype)``; gradients and the update stay in fp32 (the
    parameters are fp32 master weights). Meant for bf16, on CPU or GPU, which needs no loss
    scaling; use mmengine's ``AmpOptimWrapper`` for fp16.

    Args:
        dtype: ``'bfloat16'`` (default) or ``'float16'``.
        **kwargs: ``OptimWrapper``'s (``optimizer``, ``clip_grad``, ``accumulative_counts``).
    """

    def __init__(self, dtype: str = 'bfloat16', **kwargs):
        super().__init__(**kwargs)
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f"AutocastOptimWrapper: dtype must be 'bfloat16' or 'float16', "
                             f'got {dtype!r}')
        self.dtype = getattr(torch, dtype)

    @contextlib.contextmanager
    def optim_context(self, model):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device, dtype=self.dtype):
            yield


def resolve_precision(precision: str, cuda: bool | None = None,
                      bf16_units: list[str] | None = None,
                      bf16_speedup: float | None = None) -> str:
    """The precision that will run: ``'fp32'``, ``'bf16'`` or ``'fp16'``.

    ``'amp'`` is fp16 on a GPU and bf16 on a CPU; bf16 on a CPU without bf16 units, or with
    ``avx512_bf16`` only where bf16 is measured slower than fp32 (``bf16_speedup`` below 1;
    :func:`cpu_bf16_speedup` when not given), falls back to fp32 with a warning saying why;
    fp16 without a GPU is an error. ``bf16_units`` and ``bf16_speedup`` override the detection
    (tests).
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if precision == 'amp':
        precision = 'fp16' if cuda else 'bf16'
    if precision == 'fp16' and not cuda:
        raise ValueError("precision 'fp16' needs a GPU (CPU autocast runs bf16): use 'bf16' or "
                         "'amp' on a CPU")
    if precision == 'bf16' and not cuda:
        units = cpu_bf16_units() if bf16_units is None else bf16_units
        if not units:
            warnings.warn('bf16 mixed precision requested, but this CPU has no bf16 matrix '
                          'units (no avx512_bf16 or amx_bf16 flag): bf16 would be emulated and '
                          'slower than fp32; running in fp32', stacklevel=2)
            return 'fp32'
        if 'amx_bf16' not in units:
            speedup = cpu_bf16_speedup() if bf16_speedup is None else bf16_speedup
            if speedup < 1.0:
                warnings.warn(f'bf16 mixed precision requested, but this CPU has avx512_bf16 '
                              f'without AMX and bf16 autocast ran a 3x3 convolution at '
                              f'{speedup:.2f}x the fp32 speed: it would be slower than fp32; '
                              f'running in fp32', stacklevel=2)
                return 'fp32'
    return precision


def apply_precision(cfg) -> str:
    """Rewrite ``cfg`` for its ``precision`` key (module docstring); returns the precision that
    will run. ``optim_wrapper`` (when present) becomes :class:`AutocastOptimWrapper` (bf16) or
    ``AmpOptimWrapper`` (fp16); ``val_cfg`` / ``test_cfg`` get ``fp16=True`` (autocast during
    evaluation: bf16 on a CPU, fp16 on a GPU)."""
    precision = resolve_precision(cfg.get('precision', 'fp32'))
    cfg.precision = precision
    if precision == 'fp32':
        return precision
    if cfg.get('optim_wrapper'):
        wrapper = cfg.optim_wrapper
        if precision == 'bf16':
            wrapper.type, wrapper.dtype = 'AutocastOptimWrapper', 'bfloat16'
        else:
            wrapper.type = 'AmpOptimWrapper'
            wrapper.setdefault('loss_scale', 'dynamic')
    for loop in ('val_cfg', 'test_cfg'):
        if cfg.get(loop):
            cfg[loop].fp16 = True
    return precision


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Before the run, store the model's 4-D parameters and buffers in ``torch.channels_last``
    order (added by :func:`apply_speed_options` for ``channels_last = True``)."""

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        # 4-D tensors only: a 3D network's 5-D weights have no channels_last order
        # (``Module.to(memory_format=...)`` would raise on them)
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)


@HOOKS.register_module()
class FuseConvBNHook(Hook):
    """When a test starts (after the checkpoint is loaded), fold each eval-mode BatchNorm of the
    model into the convolution before it (:func:`toolbox.models.layers.fuse_conv_bn`; added by
    :func:`apply_speed_options` for ``fuse_conv_bn = True``). Not at validation during
    training: the model being trained keeps its BatchNorms."""

    priority = 'VERY_LOW'  # after the hooks that may swap in other weights (EMA)

    def before_test(self, runner) -> None:
        from toolbox.models.layers import fuse_conv_bn
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.eval()
        folded = fuse_conv_bn(model)
        runner.logger.info(f'fuse_conv_bn: folded {folded} BatchNorms into convolutions')


def apply_speed_options(cfg) -> str:
    """Apply the config's speed keys before the Runner is built: ``precision``
    (:func:`apply_precision`), ``channels_last`` (NHWC weights through
    :class:`ChannelsLastHook` and NHWC batches from the data preprocessor; unset, on for bf16
    on a CPU), ``fuse_conv_bn`` (:class:`FuseConvBNHook`), ``num_threads``
    (:func:`set_num_threads`) and ``flush_denormal`` (module docstring; on by default).
    ``compile`` is mmengine's own key (``torch.compile`` of the
    training step). Returns the precision that will run."""
    precision = apply_precision(cfg)
    channels_last = cfg.get('channels_last')
    if channels_last is None:
        channels_last = default_channels_last(precision)
    hooks = list(cfg.get('custom_hooks') or [])
    if channels_last:
        # a test-time-augmentation wrapper (tools/test.py --tta) holds the model as 'module'
        network = cfg.model.get('module', cfg.model)
        network.setdefault('data_preprocessor', {})['channels_last'] = True
        if not any(h.get('type') == 'ChannelsLastHook' for h in hooks):
            hooks.append(dict(type='ChannelsLastHook'))
    if cfg.get('fuse_conv_bn') and not any(h.get('type') == 'FuseConvBNHook' for h in hooks):
        hooks.append(dict(type='FuseConvBNHook'))
    if hooks:
        cfg.custom_hooks = hooks
    set_num_threads(cfg.get('num_threads'))
    set_flush_denormal(bool(cfg.get('flush_denormal', True)))
    return precision


def default_channels_last(precision: str, cuda: bool | None = None) -> bool:
    """What an unset ``channels_last`` means: on for bf16 on a CPU (module docstring)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return precision == 'bf16' and not cuda


def set_num_threads(num_threads: int | None) -> None:
    """``torch.set_num_threads`` (intra-op) and ``OMP_NUM_THREADS`` for child processes; ``None``
    keeps torch's default (one thread per physical core)."""
    if num_threads is None:
        return
    if num_threads < 1:
        raise ValueError(f'num_threads must be >= 1, got {num_threads}')
    torch.set_num_threads(num_threads)
    os.environ['OMP_NUM_THREADS'] = str(num_threads)


def set_flush_denormal(enabled: bool) -> None:
    """``torch.set_flush_denormal(enabled)`` on the main thread and on torch's CPU workers.

    The x86 FTZ / DAZ flags belong to a thread, and an OpenMP worker takes the flags of the
    thread that starts it: after any parallel op (the bf16 probe, a model built earlier in the
    process) torch's call alone reaches the main thread only. Measured on a 2-core Xeon: a
    Swin-T forward at 2x512x512, whose attention outputs hold subnormals at padded windows,
    took 0.84 s with the flags set late and 0.60 s with them set before the first op; a
    384x384 matrix product with subnormal inputs 62 ms against 0.3 ms. So the OpenMP pool is
    released (OpenMP 5.0 ``omp_pause_resource_all``) and the next parallel op starts workers
    that carry the new flags. Without an OpenMP runtime exposing it, only the main thread
    changes.
    """
    if torch.set_flush_denormal(enabled):
        pause = _openmp_pause_resource_all()
        if pause is not None:
            pause(2)  # omp_pause_hard: the workers end, their number (ICV) stays


@functools.lru_cache(maxsize=1)
def _openmp_pause_resource_all():
    """``omp_pause_resource_all`` of the OpenMP runtime torch ships (``torch/lib/libgomp*``,
    ``libiomp*``, ``libomp*``) or, failing that, of one loaded globally; ``None`` if none
    exposes it."""
    import ctypes
    import glob
    bundled = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), 'lib', 'lib*omp*')))
    for path in (*bundled, None):
        try:
            function = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
        return function
    return None
