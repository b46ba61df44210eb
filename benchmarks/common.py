"""Helpers shared by the benchmark scripts: machine description, timing, JSON-lines output.

Importing this module turns on the flushing of subnormal floats (on every torch thread), as
``tools/train.py`` and ``tools/test.py`` run by default (``flush_denormal``,
:mod:`toolbox.engine.precision`): ours and the peer are timed in the same float mode. Without
it, models at random initialisation can spend most of a pass on subnormal operands (a Swin-T
forward at 2x512x512 on a 2-core Xeon: 0.84 s instead of 0.60 s).
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from toolbox.engine.precision import set_flush_denormal

set_flush_denormal(True)


def machine() -> dict:
    """Where a number was measured: CPU model and its SIMD / matrix-unit flags, core count,
    accelerator, library versions."""
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):  # not Linux, or no model name
        cpu = platform.processor() or platform.machine()
    import torchvision
    try:
        with open('/proc/cpuinfo') as f:
            flags = next((line.split(':', 1)[1].split() for line in f
                          if line.startswith('flags')), [])
    except OSError:
        flags = []
    # the vector / matrix units that decide fp32 and bf16 speed
    wanted = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16')
    return dict(cpu=cpu, cpu_flags=[f for f in wanted if f in flags], cores=os.cpu_count(),
                torch_threads=torch.get_num_threads(), flush_denormal=True,
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                python=platform.python_version(), torch=torch.__version__,
                torchvision=torchvision.__version__)


def median_seconds(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(fn_a, fn_b, repeats: int, warmup: int, sync=lambda: None) -> tuple[float, float]:
    """Median seconds of ``fn_a`` and ``fn_b``, timed one after the other ``repeats`` times, so
    that load from other processes hits both alike; ``sync`` (e.g. ``torch.cuda.synchronize``)
    runs before each clock read."""
    times_a, times_b = alternate_samples(fn_a, fn_b, repeats, warmup, sync)
    return statistics.median(times_a), statistics.median(times_b)


def alternate_samples(fn_a, fn_b, repeats: int, warmup: int,
                      sync=lambda: None) -> tuple[list[float], list[float]]:
    """The ``repeats`` seconds of ``fn_a`` and of ``fn_b`` behind :func:`alternate`, in round
    order: ``b[i] / a[i]`` is the ratio of round ``i``. The order within a round flips every
    round (a b, b a, a b, ...): whichever call runs second can find memory the first one just
    freed, and a fixed order put op-for-op identical ResNet-50s 2-5 % apart in
    forward + backward on a 2-core Xeon."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    sync()
    times_a, times_b = [], []
    for i in range(repeats):
        pair = ((fn_a, times_a), (fn_b, times_b))
        for fn, times in (pair if i % 2 == 0 else pair[::-1]):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return times_a, times_b


def ratio_quartiles(times_a: list[float], times_b: list[float]) -> list[float]:
    """First and third quartiles of the per-round ratios ``b / a`` of
    :func:`alternate_samples`: the spread a median ratio carries."""
    q1, _, q3 = statistics.quantiles([b / a for a, b in zip(times_a, times_b)], n=4)
    return [round(q1, 3), round(q3, 3)]


def emit(record: dict, out_path: str | None = None) -> None:
    """Print one JSON line (and append it to ``out_path`` if given)."""
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if out_path:
        with open(out_path, 'a') as f:
            f.write(line + '\n')


def child_peak_mib(code: str, *args, cwd: str | None = None) -> float:
    """Run ``code`` (a script that imports :func:`reset_peak_rss` / :func:`peak_rss_mib_above`
    from ``common`` and prints its peak last) in a fresh Python with ``args`` as
    ``sys.argv[1:]`` and this folder on its path; return the MiB it printed. One process per
    measured model, so the other model's allocations are not in its peak."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = f'import sys\nsys.path.insert(0, {here!r})\n' + code
    result = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True,
                            text=True, check=True, cwd=cwd)
    return round(float(result.stdout.split()[-1]), 1)


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        return int(next(line.split()[1] for line in f if line.startswith(key + ':')))


def reset_peak_rss() -> int:
    """Reset this process's peak resident set (Linux ``VmHWM``, via ``/proc/self/clear_refs``)
    and return the current resident set in KiB: the base that :func:`peak_rss_mib_above`
    subtracts. CPU peak memory has no per-call allocator counter (tracemalloc does not see
    torch's allocations), so a benchmark measures it in a child process of its own."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return _proc_status_kib('VmRSS')


def peak_rss_mib_above(base_kib: int) -> float:
    """Peak resident set since :func:`reset_peak_rss`, above its base, in MiB."""
    return (_proc_status_kib('VmHWM') - base_kib) / 1024
