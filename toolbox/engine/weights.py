"""Loading third-party weights into a module, with a report that is always logged.

:func:`load_weights` is the one place where pretrained or foreign weights enter a model
(backbone ``pretrained=...``, parity tests, conversion scripts). It never drops a tensor silently:
every key that was not loaded is returned *and* logged, under one of three names:

* ``missing``: keys of the module that the checkpoint does not provide (they keep their init);
* ``unexpected``: keys of the checkpoint that the module does not have (ignored);
* ``mismatched``: keys both have, with different shapes (skipped, the module keeps its init).

Files are read with ``torch.load(..., weights_only=True)``: a file that needs full unpickling
is refused with an error naming it (our own resume checkpoints are loaded elsewhere, from a path
the user names for resume).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from mmengine.logging import print_log
from torch import nn

TORCHVISION_SCHEME = 'torchvision://'
_SHOWN_KEYS = 5  # how many keys of each kind the log names


def resolve_checkpoint(name: str) -> str:
    """Turn a checkpoint name into a local file path.

    ``'torchvision://resnet50'`` names torchvision's ``IMAGENET1K_V1`` weights of that
    architecture (the weights mmdet's ``torchvision://`` names refer to). They are looked up in
    the torch hub cache (``$TORCH_HOME/hub/checkpoints``) and downloaded there when absent.
    Any other string is a local path and must exist.
    """
    if name.startswith(TORCHVISION_SCHEME):
        from torchvision.models import get_model_weights
        arch = name[len(TORCHVISION_SCHEME):]
        try:
            url = get_model_weights(arch)['IMAGENET1K_V1'].url
        except (ValueError, KeyError) as exc:
            raise ValueError(f"'{name}': torchvision has no IMAGENET1K_V1 weights for "
                             f"architecture '{arch}'") from exc
        path = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))
        if not os.path.isfile(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            print_log(f'Downloading {url} to {path}', logger='current')
            try:
                torch.hub.download_url_to_file(url, path)
            except OSError as exc:  # URLError, no network, no disk space
                raise OSError(
                    f"'{name}': the weights are not in the torch hub cache ({path}) and could not "
                    f"be downloaded ({exc}). Put the file there, give a local path instead, or "
                    f"set the backbone's pretrained=None to train from scratch") from exc
        return path
    if not os.path.isfile(name):
        raise FileNotFoundError(f"checkpoint '{name}' does not exist")
    return name


def _extract_state_dict(obj, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint (raw, or under 'state_dict' / 'model')."""
    if isinstance(obj, Mapping):
        for key in ('state_dict', 'model'):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: expected a state dict (a dict of tensors, possibly under "
                         f"'state_dict' or 'model'), got {type(obj).__name__}")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f'{source}: {len(not_tensors)} entries are not tensors, '
                         f'e.g. {not_tensors[:_SHOWN_KEYS]}')
    return dict(obj)


def _rename(state_dict: dict, prefix_map: Mapping[str, str] | None) -> dict:
    """Apply ``{'old_prefix': 'new_prefix'}`` renames in order (each rename sees the previous)."""
    for old, new in (prefix_map or {}).items():
        state_dict = {(new + k[len(old):] if k.startswith(old) else k): v
                      for k, v in state_dict.items()}
    return state_dict


def _shown(keys: list[str]) -> str:
    more = f', ... (+{len(keys) - _SHOWN_KEYS})' if len(keys) > _SHOWN_KEYS else ''
    return ', '.join(keys[:_SHOWN_KEYS]) + more


def read_state_dict(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                    prefix_map: Mapping[str, str] | None = None
                    ) -> tuple[dict[str, torch.Tensor], str]:
    """``(state_dict, source)``: the tensors of a checkpoint, renamed by ``prefix_map``.

    A path (``torchvision://arch`` accepted, see :func:`resolve_checkpoint`) is read with
    ``torch.load(weights_only=True)``; a checkpoint may be a raw state dict or hold one under
    ``'state_dict'`` or ``'model'``. ``source`` names it in messages. Backbones whose checkpoints
    need converting read them with this, convert, then call :func:`load_weights`.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = 'state dict'
        loaded = path_or_state_dict
    else:
        source = resolve_checkpoint(os.fspath(path_or_state_dict))
        try:
            loaded = torch.load(source, map_location='cpu', weights_only=True)
        except Exception as exc:
            raise RuntimeError(f'{source}: cannot be loaded with torch.load(weights_only=True) '
                               f'({type(exc).__name__}: {exc}). Third-party weights must be a '
                               f'plain tensor state dict.') from exc
    return _rename(_extract_state_dict(loaded, source), prefix_map), source


def load_weights(module: nn.Module,
                 path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                 prefix_map: Mapping[str, str] | None = None,
                 strict: bool = False,
                 logger: str | logging.Logger | None = None) -> dict[str, list[str]]:
    """Load weights into ``module`` and report every key that was not loaded.

    Args:
        module: the module to load into (in place).
        path_or_state_dict: a checkpoint path (``torchvision://arch`` is accepted, see
            :func:`resolve_checkpoint`), or an in-memory state dict. A checkpoint may be a raw
            state dict or a dict holding one under ``'state_dict'`` or ``'model'``.
        prefix_map: ``{'old_prefix': 'new_prefix'}`` key renames applied in order before
            matching, e.g. ``{'module.': '', 'backbone.': ''}``.
        strict: raise ``RuntimeError`` (after logging) if anything is missing, unexpected or
            mismatched.
        logger: passed to mmengine ``print_log``; ``None`` means the current MMLogger.

    Returns:
        ``dict(missing=[...], unexpected=[...], mismatched=[...])``, key names after renaming.
        Mismatched keys (same name, different shape) are skipped and are not also listed as
        missing.
    """
    state_dict, source = read_state_dict(path_or_state_dict, prefix_map)
    own = module.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    mismatch_shapes = {k: (tuple(state_dict[k].shape), tuple(own[k].shape)) for k in mismatched}
    for key in mismatched:
        del state_dict[key]
    result = module.load_state_dict(state_dict, strict=False)
    skipped = set(mismatched)
    report = dict(missing=[k for k in result.missing_keys if k not in skipped],
                  unexpected=list(result.unexpected_keys),
                  mismatched=mismatched)

    n_loaded = len(state_dict) - len(report['unexpected'])
    lines = [f'load_weights from {source} into {type(module).__name__}: loaded {n_loaded} '
             f'tensors; missing {len(report["missing"])}, unexpected '
             f'{len(report["unexpected"])}, mismatched {len(mismatched)}']
    if report['missing']:
        lines.append(f'  missing (kept their initialisation): {_shown(report["missing"])}')
    if report['unexpected']:
        lines.append(f'  unexpected (ignored): {_shown(report["unexpected"])}')
    if mismatched:
        lines.append('  mismatched (skipped; checkpoint shape vs model shape): ' + _shown(
            [f'{k} {mismatch_shapes[k][0]} vs {mismatch_shapes[k][1]}' for k in mismatched]))
    level = logging.WARNING if report['missing'] or mismatched else logging.INFO
    print_log('\n'.join(lines), logger=logger if logger is not None else 'current', level=level)

    if strict and any(report.values()):
        raise RuntimeError(f'load_weights(strict=True) from {source}: ' + '; '.join(
            f'{len(v)} {k}: {_shown(v)}' for k, v in report.items() if v))
    return report
