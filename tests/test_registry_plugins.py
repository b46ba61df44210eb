"""Registries, plugin discovery through entry points, and build-time error messages."""
import subprocess
import sys

import pytest
from mmengine import registry as mm_registry

from toolbox.plugins import distribution_of, list_components, loaded_plugins
from toolbox.registry import ALL_REGISTRIES, MODELS, SCOPE, UnknownComponentError

from .conftest import REPO_ROOT


def test_every_mmengine_root_registry_has_a_toolbox_child():
    roots = {name: obj for name, obj in vars(mm_registry).items()
             if isinstance(obj, mm_registry.Registry) and name.isupper()}
    children = {id(r.parent): r for r in ALL_REGISTRIES.values()}
    missing = [name for name, root in roots.items() if id(root) not in children]
    assert missing == []
    assert all(r.scope == SCOPE for r in ALL_REGISTRIES.values())


def test_first_party_and_third_party_plugins_are_discovered():
    names = {ep.name: ep.value for ep in loaded_plugins()}
    assert names['backbones'] == 'toolbox_plugins.backbones'
    assert names['example'] == 'toolbox_plugin_example'  # the installed example package
    rows = {(r['registry'], r['name']): r for r in list_components()}
    assert rows[('model', 'ResNet')]['package'] == 'toolbox'
    assert rows[('model', 'TinyConvBackbone')]['package'] == 'toolbox-plugin-example'
    assert rows[('dataset', 'CocoDataset')]['module'] == 'toolbox.datasets.detection'
    assert distribution_of('toolbox_plugins.heads') == 'toolbox'


def test_third_party_backbone_builds_and_honours_the_contract():
    import torch
    model = MODELS.build(dict(type='TinyConvBackbone'))
    outs = model(torch.zeros(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == list(model.out_channels)
    assert [32 // o.shape[-1] for o in outs] == list(model.strides)


def test_unknown_type_names_registry_plugins_and_closest_names():
    with pytest.raises(UnknownComponentError) as info:
        MODELS.build(dict(type='ResNett', depth=50))
    message = str(info.value)
    assert "'ResNett' is not registered in registry 'model' (scope 'toolbox')" in message
    assert "'ResNet'" in message  # closest name
    assert 'backbones (toolbox_plugins.backbones)' in message  # loaded plugins


def test_unknown_type_through_mmengine_root_registry_is_explained_too():
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('toolbox'):
        with pytest.raises(KeyError, match='Closest registered names'):
            mm_registry.MODELS.build(dict(type='FocalLos'))


def test_unknown_keyword_names_class_and_accepted_arguments():
    with pytest.raises(TypeError) as info:
        MODELS.build(dict(type='FocalLoss', gama=2.0))
    message = str(info.value)
    assert 'FocalLoss got unknown argument(s)' in message and "'gama'" in message
    assert "'gamma'" in message  # the accepted arguments are listed


def test_list_components_tool_prints_packages():
    out = subprocess.run([sys.executable, 'tools/list_components.py', '--registry', 'model'],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert 'TinyConvBackbone' in out and 'toolbox-plugin-example' in out
    assert 'plugins loaded:' in out


def test_custom_imports_register_an_uninstalled_module(tmp_path):
    module = tmp_path / 'my_local_plugin.py'
    module.write_text('from toolbox.registry import MODELS\n'
                      'import torch.nn as nn\n'
                      '@MODELS.register_module()\n'
                      'class LocalIdentity(nn.Identity):\n    pass\n')
    config = tmp_path / 'cfg.py'
    config.write_text("custom_imports = dict(imports=['my_local_plugin'], "
                      "allow_failed_imports=False)\nmodel = dict(type='LocalIdentity')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        from toolbox.engine import load_config
        cfg = load_config(str(config))
        assert type(MODELS.build(cfg.model)).__name__ == 'LocalIdentity'
    finally:
        sys.path.remove(str(tmp_path))
