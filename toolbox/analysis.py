"""Model analysis behind ``tools/analysis/get_flops.py`` and ``tools/analysis/benchmark_speed.py``:
FLOPs and parameters of a config's model, and its inference speed against the machine's
measured fp32 GEMM peak.

    model = build_model('configs/retinanet_r50_fpn_800x1333_1x_coco.py')
    inputs = network_input(model, (800, 1216), batch=1)         # (1, 3, 800, 1216)
    flops = count_flops(model, inputs, mode='tensor')           # FlopCount(total, by_module)
    params = count_parameters(model)                            # ParamCount(total, trainable, ...)
    speed = time_calls(lambda: model(inputs, mode='tensor'), iters=10, warmup=2, batch=1)
    peak = gemm_peak_gflops('cpu')                              # fp32 torch.mm, GFLOP/s

Conventions:
  * FLOPs come from torch's own counter, ``torch.utils.flop_counter.FlopCounterMode``, which
    counts **2 FLOPs per multiply-add** (a ``Conv2d(3, 8, 3)`` output pixel costs
    2 * 8 * 3 * 3 * 3). GFLOPs here are therefore twice the "GMACs" that fvcore / mmcv (and
    many papers) print under the name "FLOPs". Only the ops the counter knows are counted:
    matrix products, convolutions (and their transposes), attention; element-wise ops, norms,
    activations, pooling, interpolation, NMS and custom ops (e.g. deformable convolution) are
    not, so the count is the arithmetic the GEMM-like kernels do.
  * The "forward" of a detector or segmentor is its ``'tensor'`` mode: backbone, neck and
    head(s) without post-processing (decoding, NMS, resizing logits), on a batch that has
    already been normalised and padded. A two-stage detector's ``'tensor'`` mode includes the
    RPN's proposal selection, as the detector defines it.
  * The per-module breakdown is over the model's top-level children (``backbone``, ``neck``,
    ``bbox_head`` / ``decode_head``, ...): FLOPs run while a child's ``forward`` is active;
    ``other`` is what ran outside every child (e.g. the data preprocessor, post-processing,
    a head's method that calls ``forward`` directly rather than through ``__call__``).
  * Input shapes are ``(B, C, H, W)`` for images and ``(B, C, D, H, W)`` for volumes; the
    spatial size is padded up to the data preprocessor's ``pad_size_divisor`` as a real
    batch would be.
  * Efficiency = achieved FLOP/s (counted FLOPs of the timed call / median seconds) over the
    fp32 ``torch.mm`` peak measured on the same device and thread count. Under bf16 / fp16
    autocast or TF32 convolutions (cuDNN's default on a GPU) it can exceed 1: the peak is fp32's.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: how the counter counts, printed by the tools next to every FLOP figure
FLOP_CONVENTION = ('torch.utils.flop_counter.FlopCounterMode: a multiply-add counts as 2 FLOPs '
                   '(GMACs = GFLOPs / 2); matmul / conv / attention only (element-wise ops, '
                   'norms, pooling, NMS and custom ops are not counted)')
#: name of the FLOPs that ran outside every top-level child
OUTSIDE_CHILDREN = 'other'
#: square sizes of the fp32 ``torch.mm`` that measure the GEMM peak
DEFAULT_GEMM_SIZES = (2048, 4096)


class ShapeError(ValueError):
    """No input shape could be inferred from the config, or a shape that does not fit."""


# ---------------------------------------------------------------------------------- counting

@dataclass
class FlopCount:
    """FLOPs of one call (2 per multiply-add, see the module docstring).

    Attributes:
        total: all counted FLOPs of the call.
        by_module: FLOPs per top-level child of the root module, in ``named_children`` order,
            plus :data:`OUTSIDE_CHILDREN` when something ran outside them; sums to ``total``
            (empty without a root or for a root without children).
    """
    total: int
    by_module: dict[str, int] = field(default_factory=dict)


def count_call_flops(fn: Callable[[], object], root: nn.Module | None = None) -> FlopCount:
    """Run ``fn()`` once under ``FlopCounterMode`` and ``torch.no_grad`` and count its FLOPs.

    With ``root``, the count is split over ``root``'s top-level children: a forward hook pair on
    each child reads the counter's running total (``get_total_flops``) when the child's
    ``forward`` starts and ends, so a child's share is what ran inside it, however deep.
    """
    counter = FlopCounterMode(display=False)
    children = list(root.named_children()) if root is not None else []
    by_module = {name: 0 for name, _ in children}
    started: dict[str, int] = {}
    handles = []
    for name, child in children:
        def pre_hook(module, args, name=name):
            started[name] = counter.get_total_flops()

        def post_hook(module, args, output, name=name):
            by_module[name] += counter.get_total_flops() - started.pop(name)

        handles.append(child.register_forward_pre_hook(pre_hook))
        handles.append(child.register_forward_hook(post_hook))
    # Parameters stop requiring grad while counting: under no_grad, a view of a parameter
    # (e.g. DETR's ``query_embedding.weight[None].expand(...)``) passed to a submodule still
    # requires grad but has no grad_fn, and the counter's module tracker fails on it.
    trainable = [p for p in root.parameters() if p.requires_grad] if root is not None else []
    try:
        for param in trainable:
            param.requires_grad_(False)
        with torch.no_grad(), counter:
            fn()
    finally:
        for param in trainable:
            param.requires_grad_(True)
        for handle in handles:
            handle.remove()
    total = counter.get_total_flops()
    outside = total - sum(by_module.values())
    if children and outside:
        by_module[OUTSIDE_CHILDREN] = outside
    return FlopCount(total=total, by_module=by_module)


def count_flops(module: nn.Module, *args, **kwargs) -> FlopCount:
    """FLOPs of ``module(*args, **kwargs)``, split over ``module``'s top-level children
    (:func:`count_call_flops`)."""
    return count_call_flops(lambda: module(*args, **kwargs), root=module)


@dataclass
class ParamCount:
    """Parameter counts: ``total`` and ``trainable`` (``requires_grad``), and both per
    top-level child (``by_module[name] = (total, trainable)``)."""
    total: int
    trainable: int
    by_module: dict[str, tuple[int, int]] = field(default_factory=dict)


def count_parameters(model: nn.Module) -> ParamCount:
    """Parameters of ``model`` (each shared tensor once) and of each top-level child."""
    def totals(module: nn.Module) -> tuple[int, int]:
        params = list(module.parameters())
        return (sum(p.numel() for p in params),
                sum(p.numel() for p in params if p.requires_grad))

    total, trainable = totals(model)
    return ParamCount(total=total, trainable=trainable,
                      by_module={name: totals(child) for name, child in model.named_children()})


# ------------------------------------------------------------------------ model and inputs

def build_model(config, checkpoint: str | None = None, device: str = 'cpu',
                cfg_options: dict | None = None) -> nn.Module:
    """The model of ``config`` (a path, read with ``toolbox.engine.load_config`` and
    ``cfg_options``, or a loaded ``Config``) in eval mode on ``device``, through
    ``toolbox.apis.init_model``: plugins loaded, ``checkpoint`` loaded when given, the config
    kept as ``model.cfg``."""
    from toolbox.apis import init_model
    from toolbox.engine import load_config
    from toolbox.plugins import load_plugins
    load_plugins()
    cfg = load_config(config, cfg_options) if isinstance(config, str) else config
    return init_model(cfg, checkpoint, device=device)


def _test_pipeline(dataset_cfg) -> list:
    """The pipeline of a test dataset config, looking through dataset wrappers
    (``dataset=`` / ``datasets=[...]``, the first one)."""
    while dataset_cfg is not None:
        if dataset_cfg.get('pipeline') is not None:
            return list(dataset_cfg['pipeline'])
        inner = dataset_cfg.get('dataset')
        if inner is None and dataset_cfg.get('datasets'):
            inner = dataset_cfg['datasets'][0]
        dataset_cfg = inner
    return []


def default_input_shape(cfg) -> tuple[int, ...] | None:
    """The spatial input size a config obviously implies, else ``None``.

    * the test pipeline's ``Resize`` ``scale`` (``(w, h)`` in the pipeline, returned as
      ``(H, W)``; with ``keep_ratio`` it is the largest image the pipeline produces);
    * else the window of a segmentor's windowed test mode (``test_cfg.roi_size`` of
      ``'sliding_window'``, ``crop_size`` of ``'slide'``): ``(H, W)`` or ``(D, H, W)``, the
      size the network sees.
    """
    dataloader = cfg.get('test_dataloader') or {}
    for step in _test_pipeline(dataloader.get('dataset')):
        if step.get('type') == 'Resize' and step.get('scale') is not None:
            scale = step['scale']
            scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
            return int(scale[1]), int(scale[0])
    test_cfg = cfg.model.get('test_cfg') or {}
    window = {'sliding_window': 'roi_size', 'slide': 'crop_size'}.get(test_cfg.get('mode'))
    if window and test_cfg.get(window) is not None:
        return tuple(int(s) for s in test_cfg[window])
    return None


def resolve_input_shape(cfg, config_name: str, shape: Sequence[int] | None
                        ) -> tuple[int, ...]:
    """``shape`` ((H, W) or (D, H, W)) if given, else :func:`default_input_shape`; raises
    :class:`ShapeError` naming ``config_name`` when neither exists or ``shape`` has the wrong
    number of axes."""
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ShapeError(f'{config_name}: --shape takes H W (images) or D H W (volumes) '
                             f'of positive sizes, got {list(shape)}')
        return shape
    inferred = default_input_shape(cfg)
    if inferred is None:
        raise ShapeError(f'{config_name}: no input size can be inferred (the test pipeline has '
                         f'no Resize scale and the model no windowed test_cfg); pass --shape H W '
                         f'(or D H W for volumes)')
    return inferred


def input_channels(cfg) -> int:
    """Channels of the network input: the backbone's ``in_channels`` when the config sets an
    int, else the length of the data preprocessor's ``mean``, else 3."""
    in_channels = cfg.model.get('backbone', {}).get('in_channels')
    if isinstance(in_channels, int):
        return in_channels
    mean = (cfg.model.get('data_preprocessor') or {}).get('mean')
    return len(mean) if mean is not None else 3


def padded_shape(model: nn.Module, shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` rounded up, axis by axis, to the data preprocessor's ``pad_size_divisor`` (the
    batch size the network sees for images of that size)."""
    divisor = int(getattr(getattr(model, 'data_preprocessor', None), 'pad_size_divisor', 1) or 1)
    return tuple(math.ceil(s / divisor) * divisor for s in shape)


def network_input(model: nn.Module, shape: Sequence[int], batch: int = 1,
                  channels: int | None = None, seed: int = 0) -> torch.Tensor:
    """A normalised-looking batch (standard normal) of shape (batch, C, *padded shape) on the
    model's device, C from the config (:func:`input_channels`) unless ``channels`` is given."""
    cfg = getattr(model, 'cfg', None)
    channels = channels or (input_channels(cfg) if cfg is not None else 3)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *padded_shape(model, shape),
                       generator=generator).to(device)


def packed_batch(model: nn.Module, shape: Sequence[int], batch: int = 1,
                 channels: int | None = None, seed: int = 0) -> Callable[[], dict]:
    """A maker of the ``test_step`` input a dataloader would give: ``inputs`` a list of
    ``batch`` raw (C, *shape) tensors (images: pixel values uniform in 0..255; volumes:
    standard normal, already intensity-normalised by the pipeline) and fresh ``data_samples``
    with ``img_shape`` = ``ori_shape`` = ``shape`` (no resize, no flip). The tensors are made
    once; each call returns new data samples (``test_step`` writes predictions into them)."""
    from toolbox.structures import DataSample
    cfg = getattr(model, 'cfg', None)
    channels = channels or (input_channels(cfg) if cfg is not None else 3)
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(shape)
    if len(shape) == 2:
        inputs = [torch.rand(channels, *shape, generator=generator) * 255 for _ in range(batch)]
        meta = dict(img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0), flip=False,
                    flip_direction=None)
    else:
        inputs = [torch.randn(channels, *shape, generator=generator) for _ in range(batch)]
        meta = dict(img_shape=shape, ori_shape=shape)

    def make() -> dict:
        return dict(inputs=inputs, data_samples=[DataSample(metainfo=dict(meta))
                                                 for _ in range(batch)])
    return make


def flops_report(config: str, shape: Sequence[int] | None = None, batch: int = 1,
                 cfg_options: dict | None = None, fuse_conv_bn: bool = False) -> dict:
    """FLOPs and parameters of a config's model, its ``'tensor'`` forward at ``shape``
    (default: :func:`default_input_shape`) and ``batch``, on the CPU with random weights.

    Returns a JSON-ready dict: ``config``, ``shape`` (the padded spatial size the network
    runs on), ``batch``, ``input`` (the full input shape), ``flops``, ``gflops``,
    ``flops_by_module``, ``params``, ``trainable_params``, ``params_by_module``
    (``{name: [total, trainable]}``) and ``flop_convention``.
    """
    from toolbox.engine import load_config
    cfg = load_config(config, cfg_options)
    spatial = resolve_input_shape(cfg, config, shape)
    model = build_model(cfg)
    inputs = network_input(model, spatial, batch)
    flops = count_flops(model, inputs, mode='tensor')
    params = count_parameters(model)
    return dict(config=config, shape=list(inputs.shape[2:]), batch=batch,
                input=list(inputs.shape), flops=flops.total, gflops=flops.total / 1e9,
                flops_by_module=flops.by_module, params=params.total,
                trainable_params=params.trainable,
                params_by_module={k: list(v) for k, v in params.by_module.items()},
                flop_convention=FLOP_CONVENTION)


# --------------------------------------------------------------------------------- timing

@dataclass
class Timing:
    """Wall-clock seconds of ``iters`` calls after warm-up.

    Attributes:
        times_s: each timed call, in order.
        median_s, p10_s, p90_s: median and 10th / 90th percentiles (inclusive method, so
            ``min <= p10 <= median <= p90 <= max``; all equal for one call).
        images_per_s: ``batch / median_s``.
    """
    times_s: list[float]
    median_s: float
    p10_s: float
    p90_s: float
    images_per_s: float


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """``torch.cuda.synchronize`` for a CUDA device (kernels run asynchronously: the clock is
    read after they finish), a no-op otherwise."""
    device = torch.device(device)
    if device.type == 'cuda':
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_calls(fn: Callable[[], object], iters: int, warmup: int, batch: int = 1,
               sync: Callable[[], None] = lambda: None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``iters`` timed ones, ``sync()`` before
    every clock read. ``batch`` is the number of images per call (for images/s)."""
    if iters < 1 or warmup < 0:
        raise ValueError(f'iters must be >= 1 and warmup >= 0, got {iters} and {warmup}')
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    if len(times) > 1:
        cuts = statistics.quantiles(times, n=10, method='inclusive')
        p10, p90 = cuts[0], cuts[-1]
    else:
        p10 = p90 = times[0]
    return Timing(times_s=times, median_s=median, p10_s=p10, p90_s=p90,
                  images_per_s=batch / median)


def gemm_peak_gflops(device: str | torch.device = 'cpu',
                     sizes: Sequence[int] = DEFAULT_GEMM_SIZES, repeats: int = 3) -> float:
    """The machine's fp32 matrix-product peak in GFLOP/s: ``torch.mm`` of square fp32 matrices
    of each size in ``sizes`` on ``device`` with the current thread count, one warm-up and
    ``repeats`` timed products each; the best (``2 n^3`` FLOPs over the fastest time) over all
    sizes. On a GPU TF32 stays as configured (off by default for matmul: true fp32)."""
    sync = synchronizer(device)
    best = 0.0
    for n in sizes:
        generator = torch.Generator().manual_seed(n)
        a = torch.randn(n, n, generator=generator).to(device)
        b = torch.randn(n, n, generator=generator).to(device)
        timing = time_calls(lambda: torch.mm(a, b), iters=repeats, warmup=1, sync=sync)
        best = max(best, 2 * n ** 3 / min(timing.times_s) / 1e9)
    return best


def machine_description() -> dict:
    """Where a number was measured: ``benchmarks/common.py``'s ``machine()`` (CPU model,
    cores, threads, GPU, versions), loaded by path from the repository next to ``toolbox``
    (the benchmarks are not a package); when the toolbox is installed without its repository,
    a note saying so with the torch version and thread count."""
    common = Path(__file__).resolve().parents[1] / 'benchmarks' / 'common.py'
    if not common.is_file():
        return dict(note=f'{common} not found (toolbox installed without its repository)',
                    torch=torch.__version__, torch_threads=torch.get_num_threads())
    spec = importlib.util.spec_from_file_location('_toolbox_benchmarks_common', common)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.machine()


def autocast_context(precision: str, device: str | torch.device):
    """``torch.autocast(device type, bf16 / fp16)`` for ``precision`` ``'bf16'`` / ``'fp16'``
    (as :func:`toolbox.engine.precision.resolve_precision` returns), a null context for
    ``'fp32'``."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


def speed_report(config: str, checkpoint: str | None = None,
                 shape: Sequence[int] | None = None, batch: int = 1, iters: int = 20,
                 warmup: int = 3, amp: str | None = None, channels_last: bool | None = None,
                 threads: int | None = None, mode: str = 'forward', device: str | None = None,
                 gemm_sizes: Sequence[int] = DEFAULT_GEMM_SIZES, gemm_repeats: int = 3,
                 cfg_options: dict | None = None, fuse_conv_bn: bool = False) -> dict:
    """Inference speed of a config's model (eval, ``no_grad``) and its efficiency.

    Args:
        mode: ``'forward'`` times ``model(inputs, mode='tensor')`` on a normalised, padded
            (batch, C, *shape) tensor; ``'predict'`` times ``model.test_step`` on a packed
            batch of raw images (:func:`packed_batch`): data preprocessor, network and
            post-processing (decoding, NMS / resizing logits).
        amp: ``None`` (fp32), ``'bf16'`` or ``'fp16'``, resolved by
            :func:`toolbox.engine.precision.resolve_precision` (bf16 on a CPU without bf16
            units falls back to fp32 with a warning; fp16 needs a GPU).
        channels_last: model and input in ``torch.channels_last`` (``channels_last_3d`` for
            volumes); in predict mode the data preprocessor emits NHWC batches. ``None``: as
            the config key (:func:`toolbox.engine.precision.default_channels_last`, on for
            bf16 on a CPU).
        fuse_conv_bn: fold the BatchNorms into the convolutions before timing
            (:func:`toolbox.models.layers.fuse_conv_bn`); FLOPs are counted before.
        threads: intra-op threads (:func:`toolbox.engine.precision.set_num_threads`), for the
            model and the GEMM peak alike. Subnormal floats are flushed unless the config sets
            ``flush_denormal = False``, as in training and testing.
        device: ``'cuda'`` when available, else ``'cpu'``, unless given.

    Returns a JSON-ready dict: ``machine``, ``config``, ``mode``, ``device``, ``precision``
    (the one that ran), ``channels_last``, ``fuse_conv_bn``, ``threads``, ``shape`` (padded
    spatial size), ``batch``, ``flops`` (counted FLOPs of one timed call, fp32, same counter as
    :func:`flops_report`), ``params``, ``iters``, ``warmup``, ``median_s``, ``p10_s``,
    ``p90_s``, ``images_per_s``, ``achieved_gflops``, ``gemm_peak_gflops``, ``efficiency``.
    """
    from toolbox.engine import load_config
    from toolbox.engine.precision import (default_channels_last, resolve_precision,
                                          set_flush_denormal, set_num_threads)
    from toolbox.models.layers import fuse_conv_bn as fold_norms
    if mode not in ('forward', 'predict'):
        raise ValueError(f"mode must be 'forward' or 'predict', got {mode!r}")
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    cuda = torch.device(device).type == 'cuda'
    if cuda and not torch.cuda.is_available():
        raise ValueError(f'device {device!r} requested but no CUDA GPU is available')
    precision = resolve_precision(amp or 'fp32', cuda=cuda)
    if channels_last is None:
        channels_last = default_channels_last(precision, cuda)
    set_num_threads(threads)
    cfg = load_config(config, cfg_options)
    set_flush_denormal(bool(cfg.get('flush_denormal', True)))  # as tools/train.py and test.py
    spatial = resolve_input_shape(cfg, config, shape)
    model = build_model(cfg, checkpoint, device=device)
    if mode == 'forward':
        inputs = network_input(model, spatial, batch)
        network_shape = list(inputs.shape[2:])

        def call():
            return model(inputs, mode='tensor')
    else:
        make_batch = packed_batch(model, spatial, batch)
        network_shape = list(padded_shape(model, spatial))

        def call():
            return model.test_step(make_batch())
    flops = count_call_flops(call, root=model).total  # fp32, default memory format
    if fuse_conv_bn:
        fold_norms(model)
    if channels_last:
        memory_format = torch.channels_last if len(spatial) == 2 else torch.channels_last_3d
        model.to(memory_format=memory_format)
        if mode == 'forward':
            inputs = inputs.contiguous(memory_format=memory_format)
        elif len(spatial) == 2 and hasattr(model.data_preprocessor, 'channels_last'):
            model.data_preprocessor.channels_last = True
    sync = synchronizer(device)
    peak = gemm_peak_gflops(device, gemm_sizes, gemm_repeats)

    def timed_call():
        with torch.no_grad(), autocast_context(precision, device):
            call()
    timing = time_calls(timed_call, iters=iters, warmup=warmup, batch=batch, sync=sync)
    achieved = flops / timing.median_s / 1e9
    return dict(machine=machine_description(), config=config, mode=mode, device=device,
                precision=precision, channels_last=channels_last, fuse_conv_bn=fuse_conv_bn,
                threads=torch.get_num_threads(), shape=network_shape, batch=batch,
                flops=flops, params=count_parameters(model).total, iters=iters, warmup=warmup,
                median_s=timing.median_s, p10_s=timing.p10_s, p90_s=timing.p90_s,
                images_per_s=timing.images_per_s, achieved_gflops=achieved,
                gemm_peak_gflops=peak, efficiency=achieved / peak)


__all__ = ['DEFAULT_GEMM_SIZES', 'FLOP_CONVENTION', 'OUTSIDE_CHILDREN', 'FlopCount',
           'ParamCount', 'ShapeError', 'Timing', 'autocast_context', 'build_model',
           'count_call_flops', 'count_flops', 'count_parameters', 'default_input_shape',
           'flops_report', 'gemm_peak_gflops', 'input_channels', 'machine_description',
           'network_input', 'packed_batch', 'padded_shape', 'resolve_input_shape',
           'speed_report', 'synchronizer', 'time_calls']
