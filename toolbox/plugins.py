"""Plugin discovery: every component package, ours included, is found through entry points.

A plugin package declares, in its packaging metadata::

    [project.entry-points."toolbox.plugins"]
    my_plugin = "my_package.module"

and that module registers its classes into :mod:`toolbox.registry` when imported. The core never
imports a plugin by name; :func:`load_plugins` imports every module of the group once.
``custom_imports`` in a config stays available for local modules that are not installed.

Failures are isolated per entry point: a module that fails to import (missing dependency,
syntax error) is reported by a ``RuntimeWarning`` and in :func:`failed_plugins`, and every other
entry point still loads. First-party plugins declare one entry point per component module for
that reason, and import optional dependencies lazily with :func:`require`, so that a missing one
fails only the component that needs it, when it is built.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys
import warnings
from dataclasses import dataclass
from types import ModuleType

ENTRY_POINT_GROUP = 'toolbox.plugins'
# The distribution that installs ``toolbox`` and ``toolbox_plugins`` (``name=`` in setup.py);
# ``toolbox`` on the package index is an unrelated project.
DISTRIBUTION = 'detsegbox'


@dataclass(frozen=True)
class FailedPlugin:
    """An entry point whose module could not be imported.

    Attributes:
        name: entry-point name (e.g. ``'backbones.resnet'``).
        module: the entry point's value (``'package.module'`` or ``'package.module:attr'``).
        distribution: the installed distribution that declares it.
        error: ``'ExceptionType: message'``.
    """
    name: str
    module: str
    distribution: str
    error: str


# An entry point is identified by (distribution, name, value): two distributions may use the
# same entry-point name, and each of their modules is imported.
_loaded: dict[tuple[str, str, str], metadata.EntryPoint] = {}
_failed: dict[tuple[str, str, str], FailedPlugin] = {}
_discovered = False


def _distribution_name(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, 'dist', None)
    if dist is not None and dist.name:
        return dist.name
    return distribution_of(entry_point.module)


def _key(entry_point: metadata.EntryPoint) -> tuple[str, str, str]:
    return (_distribution_name(entry_point), entry_point.name, entry_point.value)


def _drop_half_registered(before: dict[str, set[str]]) -> list[str]:
    """Unregister components added since ``before`` whose module is not importable.

    A module that raises half-way may already have registered some classes; the import system
    removed the module from ``sys.modules``, so such leftovers are recognised by their
    ``__module__``. Classes of modules that did import (e.g. a first-party module the failed
    plugin imported) stay registered.
    """
    from toolbox.registry import ALL_REGISTRIES
    dropped = []
    for registry_name, registry in ALL_REGISTRIES.items():
        for name in set(registry._module_dict) - before[registry_name]:
            module = getattr(registry._module_dict[name], '__module__', None)
            if isinstance(module, str) and module not in sys.modules:
                del registry._module_dict[name]
                dropped.append(f'{registry_name}.{name}')
    return sorted(dropped)


def load_plugins(force: bool = False) -> list[metadata.EntryPoint]:
    """Import every module declared in the ``toolbox.plugins`` entry-point group (once).

    Each entry point is imported on its own: one that fails is reported with a
    ``RuntimeWarning`` naming the entry point, its module, its distribution and the error, is
    listed by :func:`failed_plugins`, and disables nothing else. Components a failed module
    registered before raising are unregistered.

    Args:
        force: scan the entry points again (new installs, and plugins that failed before are
            retried); plugins already loaded are not imported twice.

    Returns:
        The entry points loaded so far, sorted by name.
    """
    global _discovered
    if _discovered and not force:
        return loaded_plugins()
    _discovered = True
    from toolbox.registry import ALL_REGISTRIES
    entry_points = {_key(ep): ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    # the toolbox's own plugins first: a third-party class reusing a registered name then fails
    # its own plugin, not ours
    for key, entry_point in sorted(entry_points.items(),
                                   key=lambda kv: (kv[0][0] != DISTRIBUTION, kv[0])):
        if key in _loaded:
            continue
        before = {name: set(r._module_dict) for name, r in ALL_REGISTRIES.items()}
        try:
            entry_point.load()
        except Exception as exc:  # a broken plugin must not hide the others
            failure = FailedPlugin(name=entry_point.name, module=entry_point.value,
                                   distribution=key[0], error=f'{type(exc).__name__}: {exc}')
            _failed[key] = failure
            dropped = _drop_half_registered(before)
            note = f' Unregistered what it had registered: {dropped}.' if dropped else ''
            warnings.warn(f"toolbox plugin '{failure.name}' (module '{failure.module}', "
                          f"distribution '{failure.distribution}') failed to import and is "
                          f"disabled: {failure.error}.{note} The other plugins are loaded; "
                          f"`python tools/list_components.py` lists every failure.",
                          RuntimeWarning, stacklevel=2)
            continue
        _failed.pop(key, None)
        _loaded[key] = entry_point
    return loaded_plugins()


def loaded_plugins() -> list[metadata.EntryPoint]:
    """Entry points imported so far (without triggering discovery), sorted by name."""
    return [_loaded[key] for key in sorted(_loaded, key=lambda k: (k[1], k[0], k[2]))]


def failed_plugins() -> list[FailedPlugin]:
    """Entry points whose import failed, sorted by name (see :class:`FailedPlugin`)."""
    return sorted(_failed.values(), key=lambda f: (f.name, f.distribution, f.module))


def require(package: str, component: str, extra: str | None = None,
            pip_name: str | None = None) -> ModuleType:
    """Import an optional dependency where a component needs it (at build or call time).

    Plugin modules call this inside the component instead of importing the dependency at module
    level, so that a missing package fails only that component, with a message saying what to
    install, and not the whole plugin module::

        nib = require('nibabel', 'LoadNiftiFromFile', extra='medical')

    Args:
        package: import name of the dependency (``'nibabel'``, ``'timm.layers'``).
        component: the component that needs it, named in the error.
        extra: the extra of :data:`DISTRIBUTION` that installs it
            (``pip install 'detsegbox[extra]'``).
        pip_name: the distribution to ``pip install`` when there is no extra (default: the
            top-level import name).

    Returns:
        The imported module.

    Raises:
        ImportError: naming the component, the missing package and the install command.
    """
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        if extra is not None:
            install = f"pip install '{DISTRIBUTION}[{extra}]'"
        else:
            install = f"pip install {pip_name or package.split('.')[0]}"
        raise ImportError(f"{component} needs the optional package '{package}', which cannot be "
                          f"imported ({type(exc).__name__}: {exc}); install it with `{install}`",
                          name=package) from exc


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
