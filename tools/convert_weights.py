"""Convert a reference checkpoint (timm, official, MMDetection) into a toolbox backbone's layout:
``python tools/convert_weights.py SRC DST --arch NAME --from timm|official|mmdet``.

SRC is read with ``torch.load(weights_only=True)`` (a raw state dict, or one under
``'state_dict'`` / ``'model'``; ``--from mmdet`` keeps the ``backbone.*`` tensors of a detector
checkpoint when there are any, without the prefix). The backbone ``--arch`` names is built and
converts the keys itself: through its ``convert_state_dict(state_dict, source)`` when it has one
taking ``source``, otherwise through its ``load_pretrained`` (which detects the layout). The
weights are loaded with the toolbox's loader, which prints what was missing, unexpected or
mismatched, and the loaded tensors are written to DST as a plain state dict (temporary file, then
rename), ready for ``pretrained=DST``. Missing or mismatched keys stop the conversion unless
``--allow-missing``: a backbone half-initialised from random weights is not a conversion.
"""
import argparse
import inspect
import os
import sys
import tempfile
from collections.abc import Mapping

SOURCES = ('timm', 'official', 'mmdet')

# --arch presets (the reference model's name) -> backbone config; any registered backbone type
# name is accepted too, with --backbone-args for its arguments.
ARCHS = {
    **{f'resnet{d}': dict(type='ResNet', depth=d) for d in (18, 34, 50, 101, 152)},
    'xception65': dict(type='AlignedXception', depth=65, out_indices=(0, 1, 2, 3, 4)),
    'legacy_xception': dict(type='Xception', out_indices=(0, 1, 2, 3, 4)),
    'vovnet39a': dict(type='VoVNet', arch='V-39', version=1),
    'vovnet57a': dict(type='VoVNet', arch='V-57', version=1),
    'ese_vovnet19b_slim': dict(type='VoVNet', arch='V-19-slim', version=2),
    'ese_vovnet19b': dict(type='VoVNet', arch='V-19', version=2),
    'ese_vovnet39b': dict(type='VoVNet', arch='V-39', version=2),
    'ese_vovnet57b': dict(type='VoVNet', arch='V-57', version=2),
    'ese_vovnet99b': dict(type='VoVNet', arch='V-99', version=2),
    'swin_tiny_patch4_window7_224': dict(type='SwinTransformer', arch='T'),
    'swin_small_patch4_window7_224': dict(type='SwinTransformer', arch='S'),
    'swin_base_patch4_window7_224': dict(type='SwinTransformer', arch='B'),
    'swin_base_patch4_window12_384': dict(type='SwinTransformer', arch='B', window_size=12),
    'swin_large_patch4_window7_224': dict(type='SwinTransformer', arch='L'),
}


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Convert a timm / official / MMDetection checkpoint into the layout of a '
                    'toolbox backbone, with a missing / unexpected keys report.')
    parser.add_argument('src', help='checkpoint to convert (loaded with weights_only=True)')
    parser.add_argument('dst', help='where to write the converted state dict')
    parser.add_argument('--arch', required=True,
                        help=f'a reference architecture ({", ".join(ARCHS)}) or a registered '
                             f'backbone type (e.g. ResNet, with --backbone-args depth=50)')
    parser.add_argument('--from', dest='source', choices=SOURCES, required=True,
                        help='layout of SRC: timm, official (the authors\' or torchvision\'s '
                             'code) or mmdet')
    parser.add_argument('--backbone-args', nargs='+', action=DictAction, default={},
                        help='backbone arguments overriding the preset, e.g. depth=50')
    parser.add_argument('--allow-missing', action='store_true',
                        help='write DST even if some backbone weights were not in SRC')
    return parser.parse_args(argv)


def backbone_config(arch: str, overrides: Mapping | None = None) -> dict:
    """The config of ``--arch``: a preset of :data:`ARCHS` or a registered backbone type."""
    from toolbox.models.bases import BaseBackbone
    from toolbox.registry import MODELS, UnknownComponentError
    if arch in ARCHS:
        cfg = dict(ARCHS[arch])
    else:
        try:
            cls = MODELS.get(arch)
        except UnknownComponentError as exc:
            raise SystemExit(f"--arch {arch!r} is neither a preset ({', '.join(ARCHS)}) nor a "
                             f"registered backbone type: {exc}")
        if not (inspect.isclass(cls) and issubclass(cls, BaseBackbone)):
            raise SystemExit(f'--arch {arch!r} is registered but is not a backbone ({cls})')
        cfg = dict(type=arch)
    cfg.update(overrides or {})
    return cfg


def read_state_dict(path: str, source: str) -> dict:
    """The tensors of checkpoint ``path`` (``weights_only=True``); for ``source='mmdet'`` the
    ``backbone.*`` ones without the prefix when the checkpoint has any."""
    import torch
    if not os.path.isfile(path):
        raise SystemExit(f'checkpoint {path!r} does not exist')
    try:
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise SystemExit(f'{path}: cannot be loaded with torch.load(weights_only=True) '
                         f'({type(exc).__name__}: {exc}); give a plain tensor state dict')
    for key in ('state_dict', 'model'):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in loaded.values()) or not loaded:
        raise SystemExit(f'{path}: expected a state dict of tensors (possibly under '
                         f"'state_dict' or 'model')")
    state_dict = dict(loaded)
    if source == 'mmdet' and any(k.startswith('backbone.') for k in state_dict):
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items()
                      if k.startswith('backbone.')}
    return state_dict


def _takes_source(model) -> bool:
    convert = getattr(model, 'convert_state_dict', None)
    return convert is not None and 'source' in inspect.signature(convert).parameters


def convert(src: str, dst: str, arch: str, source: str, backbone_args: Mapping | None = None,
            allow_missing: bool = False) -> dict[str, list[str]]:
    """Convert ``src`` into backbone ``arch``'s layout and write it to ``dst``; returns the
    load report (``missing`` / ``unexpected`` / ``mismatched`` key lists)."""
    import torch

    import toolbox  # noqa: F401  (registers the core)
    from toolbox.engine.weights import load_weights
    from toolbox.plugins import load_plugins
    from toolbox.registry import MODELS
    if source not in SOURCES:
        raise SystemExit(f'--from must be one of {SOURCES}, got {source!r}')
    load_plugins()
    cfg = backbone_config(arch, backbone_args)
    cls = MODELS.get(cfg['type'])
    if 'checkpoint_format' in inspect.signature(cls).parameters:
        cfg.setdefault('checkpoint_format', source)
    model = MODELS.build(cfg)
    state_dict = read_state_dict(src, source)
    if _takes_source(model):
        try:
            converted = model.convert_state_dict(state_dict, source=source)
        except ValueError as exc:  # the backbone does not know this source
            raise SystemExit(f'{cfg["type"]}: {exc}')
        report = load_weights(model, converted, logger='current')
    else:  # the backbone converts (and detects the layout) in its own loader
        report = model.load_pretrained(state_dict)
    print(f'{cfg["type"]} from {src} ({source}): missing {len(report["missing"])}, '
          f'unexpected {len(report["unexpected"])}, mismatched {len(report["mismatched"])}')
    for kind in ('missing', 'unexpected', 'mismatched'):
        for key in report[kind]:
            print(f'  {kind}: {key}')
    if (report['missing'] or report['mismatched']) and not allow_missing:
        raise SystemExit(f'not written: {len(report["missing"])} missing and '
                         f'{len(report["mismatched"])} mismatched keys (--allow-missing writes '
                         f'the loaded tensors anyway)')
    skipped = set(report['missing']) | set(report['mismatched'])
    out = {k: v for k, v in model.state_dict().items() if k not in skipped}
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.convert_', suffix='.pth')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(out, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f'wrote {len(out)} tensors to {dst}')
    return report


def main(argv=None):
    args = parse_args(argv)
    convert(args.src, args.dst, args.arch, args.source, args.backbone_args, args.allow_missing)


if __name__ == '__main__':
    sys.exit(main())
