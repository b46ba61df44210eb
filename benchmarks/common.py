"""Helpers shared by the benchmark scripts: machine description, timing, JSON-lines output."""
import json
import os
import platform
import statistics
import time

import torch


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
                torch_threads=torch.get_num_threads(),
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
    for _ in range(warmup):
        fn_a()
        fn_b()
    sync()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def emit(record: dict, out_path: str | None = None) -> None:
    """Print one JSON line (and append it to ``out_path`` if given)."""
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if out_path:
        with open(out_path, 'a') as f:
            f.write(line + '\n')


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
