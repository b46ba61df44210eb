"""What a bug report needs: ``python -m toolbox.env``.

Prints the versions of Python and of the packages the toolbox runs on (the optional ones only
when installed), the devices (CPU model and cores, CUDA devices with their compute capability
and memory, bfloat16 support), and the plugin packages: every distribution that declares
``toolbox.plugins`` entry points, with its version and top-level packages, and every entry
point that failed to import, with its error. mmengine's own environment report (with torch's
build configuration) is in the log file of every run.
"""
from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import sys
from collections import defaultdict

# (label, distribution names tried in order); required ones are printed even when missing
REQUIRED = (('torch', ('torch',)), ('torchvision', ('torchvision',)),
            ('mmengine', ('mmengine',)), ('mmcv', ('mmcv-lite', 'mmcv')),
            ('numpy', ('numpy',)), ('scipy', ('scipy',)),
            ('opencv', ('opencv-python', 'opencv-python-headless')),
            ('pycocotools', ('pycocotools',)), ('faster-coco-eval', ('faster-coco-eval',)),
            ('albumentations', ('albumentations',)), ('matplotlib', ('matplotlib',)))
OPTIONAL = (('timm', ('timm',)), ('transformers', ('transformers',)), ('monai', ('monai',)),
            ('nibabel', ('nibabel',)), ('tensorboard', ('tensorboard',)),
            ('onnx', ('onnx',)), ('onnxruntime', ('onnxruntime',)))


def _version(label: str, distributions: tuple[str, ...]) -> str | None:
    """Version of the first installed of ``distributions``, naming it when it is not
    ``label``; None when none is installed."""
    for name in distributions:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return version if name == label else f'{version} ({name})'
    return None


def package_versions() -> list[tuple[str, str]]:
    """``(label, version)`` of Python, the toolbox's distribution and its dependencies."""
    import torch
    from toolbox.plugins import DISTRIBUTION
    rows = [('python', sys.version.split()[0] + f' ({sys.executable})'),
            (DISTRIBUTION, _version(DISTRIBUTION, (DISTRIBUTION,)) or
             'not installed (run from a checkout)')]
    rows += [(label, _version(label, names) or 'NOT INSTALLED') for label, names in REQUIRED]
    rows += [(label, version) for label, names in OPTIONAL
             if (version := _version(label, names)) is not None]
    # the build tag (+cu130, +cpu) says which wheel is installed
    return [(label, torch.__version__ if label == 'torch' else version)
            for label, version in rows]


def _cpu_info() -> tuple[str, set[str]]:
    """CPU model name and instruction-set flags (Linux ``/proc/cpuinfo``; elsewhere the
    platform's processor string and no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and value.strip():
                    model = value.strip()
                elif key.strip() in ('flags', 'Features') and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def devices() -> list[tuple[str, str]]:
    """``(label, description)`` of the CPU and of every CUDA device torch sees."""
    import torch
    model, flags = _cpu_info()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    bf16 = sorted(flags & {'avx512_bf16', 'amx_bf16'})
    rows = [('cpu', model),
            ('cpu cores', f'{os.cpu_count()} logical, {usable} usable by this process, torch '
                          f'uses {torch.get_num_threads()} threads'),
            ('cpu bfloat16 instructions', ', '.join(bf16) if bf16 else
             'none (bfloat16 runs, emulated and slower)')]
    if not torch.cuda.is_available():
        rows.append(('cuda', f'not available (torch built with CUDA {torch.version.cuda})'
                     if torch.version.cuda else 'not available (CPU-only torch build)'))
        return rows
    rows.append(('cuda', f'{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, '
                         f'{torch.cuda.device_count()} device(s)'))
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        with torch.cuda.device(index):
            bf16_ok = torch.cuda.is_bf16_supported()
        rows.append((f'cuda:{index}', f'{props.name}, compute capability {props.major}.'
                     f'{props.minor}, {props.total_memory / 2 ** 30:.1f} GiB, bfloat16 '
                     f'{"supported" if bf16_ok else "not supported"}'))
    return rows


def plugin_packages() -> tuple[list[tuple[str, str]], list[str]]:
    """The loaded plugin distributions as ``(distribution version, 'N entry points:
    packages')`` and the failed entry points as lines."""
    import toolbox  # noqa: F401  (registers the core)
    from toolbox.plugins import failed_plugins, load_plugins
    by_distribution = defaultdict(list)
    for entry_point in load_plugins():
        dist = getattr(entry_point, 'dist', None)
        name = dist.name if dist is not None else 'local'
        by_distribution[(name, dist.version if dist is not None else '')].append(entry_point)
    rows = []
    for (name, version), entry_points in sorted(by_distribution.items()):
        packages = sorted({ep.value.split(':')[0].split('.')[0] for ep in entry_points})
        rows.append((f'{name} {version}'.strip(),
                     f'{len(entry_points)} entry point(s), package(s): {", ".join(packages)}'))
    failed = [f'{p.name} = {p.module} (distribution {p.distribution}): {p.error}'
              for p in failed_plugins()]
    return rows, failed


def format_env() -> str:
    """The whole report as text (what ``python -m toolbox.env`` prints)."""
    def section(title, rows):
        width = max((len(label) for label, _ in rows), default=0)
        return [title] + [f'  {label:<{width}}  {value}' for label, value in rows]

    plugins, failed = plugin_packages()
    lines = section('versions', package_versions()) + [''] + \
        section('devices', [('platform', platform.platform())] + devices()) + [''] + \
        section('plugin packages (entry-point group toolbox.plugins)', plugins)
    lines += ['', f'failed plugins: {len(failed)}'] + [f'  {line}' for line in failed]
    return '\n'.join(lines)


def main() -> None:
    print(format_env())


if __name__ == '__main__':
    main()
