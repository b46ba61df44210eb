"""Plugin discovery: every component package, ours included, is found through entry points.

A plugin package declares, in its packaging metadata::

    [project.entry-points."toolbox.plugins"]
    my_plugin = "my_package.module"

and that module registers its classes into :mod:`toolbox.registry` when imported. The core never
imports a plugin by name; :func:`load_plugins` imports every module of the group once.
``custom_imports`` in a config stays available for local modules that are not installed.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import warnings

ENTRY_POINT_GROUP = 'toolbox.plugins'

_loaded: list[metadata.EntryPoint] = []
_failed: dict[str, str] = {}
_discovered = False


def load_plugins(force: bool = False) -> list[metadata.EntryPoint]:
    """Import every module declared in the ``toolbox.plugins`` entry-point group (once).

    A plugin that fails to import is reported with a warning naming the entry point and the
    error; the others still load.
    """
    global _discovered
    if _discovered and not force:
        return list(_loaded)
    _discovered = True
    for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                              key=lambda ep: ep.name):
        if any(ep.name == entry_point.name for ep in _loaded):
            continue
        try:
            importlib.import_module(entry_point.value)
        except Exception as exc:  # a broken third-party plugin must not hide the others
            _failed[entry_point.name] = f'{type(exc).__name__}: {exc}'
            warnings.warn(f"toolbox plugin '{entry_point.name}' ({entry_point.value}) failed to "
                          f"import: {exc}", RuntimeWarning, stacklevel=2)
            continue
        _loaded.append(entry_point)
    return list(_loaded)


def loaded_plugins() -> list[metadata.EntryPoint]:
    """Entry points imported so far (without triggering discovery)."""
    return list(_loaded)


def failed_plugins() -> dict[str, str]:
    """Entry-point name -> import error, for plugins that failed to load."""
    return dict(_failed)


def distribution_of(module_name: str) -> str:
    """Name of the installed distribution that provides ``module_name`` ('local' if none)."""
    top = module_name.split('.')[0]
    for dist_name in metadata.packages_distributions().get(top, []):
        return dist_name
    return 'local'


def list_components() -> list[dict]:
    """Every registered component: registry, name, defining module and providing package.

    Only components registered in scope ``toolbox`` are listed (mmengine's own optimizers,
    hooks and loops remain usable but belong to mmengine).
    """
    from toolbox.registry import ALL_REGISTRIES
    load_plugins()
    rows = []
    for registry_name, registry in ALL_REGISTRIES.items():
        for name, obj in sorted(registry.module_dict.items()):
            module = getattr(obj, '__module__', '?')
            rows.append(dict(registry=registry_name, name=name, module=module,
                             package=distribution_of(module)))
    return rows
