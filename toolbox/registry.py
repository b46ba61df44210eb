"""Registries of the toolbox: one child of every mmengine root registry, all in scope ``toolbox``.

Every component, first-party or third-party, registers into these objects::

    from toolbox.registry import MODELS

    @MODELS.register_module()
    class MyBackbone(nn.Module):
        ...

Registries are children of mmengine's roots, so an mmengine ``Runner`` started with
``default_scope='toolbox'`` finds our components, and mmengine's own components (optimizers,
hooks, loops) stay reachable from ours through the parent. Defining a child for *every* root
also silences mmengine's "Failed to search registry with scope toolbox" warnings.

Looking up a name that no registry in the chain knows raises :class:`UnknownComponentError`,
which names the registry, the loaded plugin packages and the closest registered names.
"""
from __future__ import annotations

import difflib
import inspect

from mmengine import registry as mm_registry
from mmengine.registry import DefaultScope, Registry, build_from_cfg

SCOPE = 'toolbox'


class UnknownComponentError(KeyError):
    """Raised when a config names a ``type`` that no registry in the chain knows."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class ToolboxRegistry(Registry):
    """mmengine ``Registry`` whose failed look-ups explain themselves.

    ``get`` returns the class as mmengine does, but a miss raises
    :class:`UnknownComponentError` instead of returning ``None``: the miss happens inside
    mmengine's ``build_from_cfg`` (the Runner builds through the root registry and lands here
    through the default scope), and the error must say what *is* available.
    """

    def get(self, key):
        from toolbox.plugins import load_plugins
        found = super().get(key)
        if found is None and '.' not in key:
            load_plugins()  # a registry used before discovery: discover, then look again
            found = super().get(key)
        if found is None:
            raise UnknownComponentError(self._unknown_message(key))
        return found

    def _unknown_message(self, key: str) -> str:
        from toolbox.plugins import loaded_plugins
        names = sorted(self._all_names())
        close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
        plugins = ', '.join(f'{p.name} ({p.value})' for p in loaded_plugins()) or 'none'
        return (f"'{key}' is not registered in registry '{self.name}' (scope '{self.scope}'). "
                f"Closest registered names: {close or 'none'}. Loaded plugins: {plugins}. "
                f"Run `python tools/list_components.py` to see every registered name; a plugin "
                f"that is not installed can be imported with `custom_imports` in the config.")

    def _all_names(self):
        names = set(self._module_dict)
        parent = self.parent
        while parent is not None:
            names |= set(parent._module_dict)
            parent = parent.parent
        return names


def build_with_checked_args(cfg, registry, default_args=None):
    """``build_from_cfg`` that names the class and its accepted arguments on a bad keyword.

    Builds run in scope ``toolbox`` unless another default scope is active, so that nested
    builds done by mmengine's own classes (e.g. ``BaseModel`` building its data preprocessor
    through mmengine's root registry) find our components too.
    """
    if DefaultScope.get_current_instance() is None:
        with DefaultScope.overwrite_default_scope(SCOPE):
            return build_with_checked_args(cfg, registry, default_args)
    if isinstance(cfg, dict) and isinstance(cfg.get('type'), str):
        with registry.switch_scope_and_registry(cfg.get('_scope_')) as scoped:
            cls = scoped.get(cfg['type'])
        given = set(cfg) - {'type', '_scope_'} | set(default_args or {})
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            params = {}
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = sorted(given - set(params)) if params and not takes_any else []
        if unknown:
            raise TypeError(f"{cls.__module__}.{cls.__qualname__} got unknown argument(s) "
                            f"{unknown}; it accepts {sorted(params)}")
    return build_from_cfg(cfg, registry, default_args)


def _child(root: Registry, name: str) -> ToolboxRegistry:
    return ToolboxRegistry(name, parent=root, scope=SCOPE, build_func=build_with_checked_args)


RUNNERS = _child(mm_registry.RUNNERS, 'runner')
RUNNER_CONSTRUCTORS = _child(mm_registry.RUNNER_CONSTRUCTORS, 'runner constructor')
LOOPS = _child(mm_registry.LOOPS, 'loop')
HOOKS = _child(mm_registry.HOOKS, 'hook')
STRATEGIES = _child(mm_registry.STRATEGIES, 'strategy')
DATASETS = _child(mm_registry.DATASETS, 'dataset')
DATA_SAMPLERS = _child(mm_registry.DATA_SAMPLERS, 'data sampler')
TRANSFORMS = _child(mm_registry.TRANSFORMS, 'transform')
MODELS = _child(mm_registry.MODELS, 'model')
MODEL_WRAPPERS = _child(mm_registry.MODEL_WRAPPERS, 'model_wrapper')
WEIGHT_INITIALIZERS = _child(mm_registry.WEIGHT_INITIALIZERS, 'weight initializer')
OPTIMIZERS = _child(mm_registry.OPTIMIZERS, 'optimizer')
OPTIM_WRAPPERS = _child(mm_registry.OPTIM_WRAPPERS, 'optim_wrapper')
OPTIM_WRAPPER_CONSTRUCTORS = _child(mm_registry.OPTIM_WRAPPER_CONSTRUCTORS,
                                    'optimizer wrapper constructor')
PARAM_SCHEDULERS = _child(mm_registry.PARAM_SCHEDULERS, 'parameter scheduler')
METRICS = _child(mm_registry.METRICS, 'metric')
EVALUATOR = _child(mm_registry.EVALUATOR, 'evaluator')
TASK_UTILS = _child(mm_registry.TASK_UTILS, 'task util')
VISUALIZERS = _child(mm_registry.VISUALIZERS, 'visualizer')
VISBACKENDS = _child(mm_registry.VISBACKENDS, 'vis_backend')
LOG_PROCESSORS = _child(mm_registry.LOG_PROCESSORS, 'log_processor')
INFERENCERS = _child(mm_registry.INFERENCERS, 'inferencer')
FUNCTIONS = _child(mm_registry.FUNCTIONS, 'function')

ALL_REGISTRIES = {r.name: r for r in (
    RUNNERS, RUNNER_CONSTRUCTORS, LOOPS, HOOKS, STRATEGIES, DATASETS, DATA_SAMPLERS, TRANSFORMS,
    MODELS, MODEL_WRAPPERS, WEIGHT_INITIALIZERS, OPTIMIZERS, OPTIM_WRAPPERS,
    OPTIM_WRAPPER_CONSTRUCTORS, PARAM_SCHEDULERS, METRICS, EVALUATOR, TASK_UTILS, VISUALIZERS,
    VISBACKENDS, LOG_PROCESSORS, INFERENCERS, FUNCTIONS)}
