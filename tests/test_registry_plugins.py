"""Registries, plugin discovery through entry points, and build-time error messages."""
import importlib.metadata as metadata
import os
import subprocess
import sys

import pytest
from mmengine import Config
from mmengine import registry as mm_registry

from toolbox import plugins
from toolbox.plugins import (DISTRIBUTION, ENTRY_POINT_GROUP, FailedPlugin, distribution_of,
                             failed_plugins, list_components, load_plugins, loaded_plugins,
                             require)
from toolbox.registry import ALL_REGISTRIES, MODELS, SCOPE, UnknownComponentError

from .conftest import REPO_ROOT

# A plugin module whose import fails half-way, after registering one class.
BROKEN_PLUGIN = (
    'import torch.nn as nn\n'
    'from toolbox.registry import MODELS\n'
    '@MODELS.register_module()\n'
    'class HalfRegisteredIdentity(nn.Identity):\n    pass\n'
    'import toolbox_missing_dependency_xyz  # noqa: F401\n')
# A plugin module that reuses the name of a first-party class.
CLASHING_PLUGIN = (
    'import torch.nn as nn\n'
    'from toolbox.registry import MODELS\n'
    '@MODELS.register_module()\n'
    'class FocalLoss(nn.Identity):\n    pass\n')
GOOD_PLUGIN = (
    'import torch.nn as nn\n'
    'from toolbox.registry import MODELS\n'
    '@MODELS.register_module()\n'
    'class FakePluginIdentity(nn.Identity):\n    pass\n')


def _fake_distribution(root, dist_name: str, entry_points: dict[str, str]):
    """An installed-looking distribution (``*.dist-info``) under ``root`` declaring
    ``entry_points`` (name -> module) in the toolbox group."""
    info = root / f"{dist_name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n')
    lines = ''.join(f'{name} = {value}\n' for name, value in entry_points.items())
    (info / 'entry_points.txt').write_text(f'[{ENTRY_POINT_GROUP}]\n{lines}')
    return metadata.PathDistribution(info)


def test_every_mmengine_root_registry_has_a_toolbox_child():
    roots = {name: obj for name, obj in vars(mm_registry).items()
             if isinstance(obj, mm_registry.Registry) and name.isupper()}
    children = {id(r.parent): r for r in ALL_REGISTRIES.values()}
    missing = [name for name, root in roots.items() if id(root) not in children]
    assert missing == []
    assert all(r.scope == SCOPE for r in ALL_REGISTRIES.values())


def test_first_party_and_third_party_plugins_are_discovered():
    names = {ep.name: ep.value for ep in loaded_plugins()}
    assert names['backbones.resnet'] == 'toolbox_plugins.backbones.resnet'
    assert names['dense_heads.retina_head'] == 'toolbox_plugins.dense_heads.retina_head'
    assert names['losses.focal_loss'] == 'toolbox_plugins.losses.focal_loss'
    assert names['example'] == 'toolbox_plugin_example'  # the installed example package
    # every first-party entry point (one per component module) imports
    declared = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
                if ep.dist.name == DISTRIBUTION}
    assert len(declared) >= 10 and declared <= set(names)
    assert [f for f in failed_plugins() if f.distribution == DISTRIBUTION] == []
    rows = {(r['registry'], r['name']): r for r in list_components()}
    assert rows[('model', 'ResNet')]['package'] == DISTRIBUTION == 'detsegbox'
    assert rows[('model', 'TinyConvBackbone')]['package'] == 'toolbox-plugin-example'
    assert rows[('dataset', 'CocoDataset')]['module'] == 'toolbox.datasets.detection'
    assert distribution_of('toolbox_plugins.dense_heads.retina_head') == DISTRIBUTION
    assert distribution_of('not_an_installed_module') == 'local'


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
    # loaded plugins
    assert 'backbones.resnet (toolbox_plugins.backbones.resnet)' in message


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


def test_list_components_tool_prints_packages_and_failed_plugins(tmp_path):
    # really installed (dist-info on sys.path) plugins whose import fails; 'aaa-clash' sorts
    # before 'detsegbox' but is loaded after it, so its FocalLoss clashes, not ours
    (tmp_path / 'fake_broken_plugin.py').write_text(BROKEN_PLUGIN)
    (tmp_path / 'fake_clashing_plugin.py').write_text(CLASHING_PLUGIN)
    _fake_distribution(tmp_path, 'fake-broken', {'broken': 'fake_broken_plugin'})
    _fake_distribution(tmp_path, 'aaa-clash', {'clash': 'fake_clashing_plugin'})
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path)] + [p for p in
                                         [env.get('PYTHONPATH')] if p])
    run = subprocess.run([sys.executable, 'tools/list_components.py', '--registry', 'model'],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True, env=env)
    out = run.stdout
    assert 'TinyConvBackbone' in out and 'toolbox-plugin-example' in out
    assert 'RetinaHead' in out and 'FocalLoss' in out  # the failure disabled nothing else
    assert 'HalfRegisteredIdentity' not in out
    loaded_line = next(line for line in out.splitlines() if line.startswith('plugins loaded:'))
    assert 'backbones.resnet=toolbox_plugins.backbones.resnet' in loaded_line
    assert 'fake_broken_plugin' not in loaded_line
    assert ("  broken=fake_broken_plugin (distribution fake-broken): ModuleNotFoundError: "
            "No module named 'toolbox_missing_dependency_xyz'") in out
    assert '  clash=fake_clashing_plugin (distribution aaa-clash): KeyError:' in out
    assert 'FocalLoss is already registered' in out
    focal = [line.split() for line in out.splitlines() if line.split()[1:2] == ['FocalLoss']]
    assert focal == [['model', 'FocalLoss', DISTRIBUTION, 'toolbox_plugins.losses.focal_loss']]
    assert "toolbox plugin 'broken' (module 'fake_broken_plugin', distribution 'fake-broken')" \
        in run.stderr and 'RuntimeWarning' in run.stderr


def test_a_broken_plugin_is_reported_and_disables_nothing_else(tmp_path, monkeypatch):
    """A plugin that fails to import is named in a warning and in failed_plugins(); every
    first-party component stays registered and buildable; a plugin reusing an entry-point name
    of another distribution is loaded too."""
    modules, dists = tmp_path / 'modules', tmp_path / 'dists'  # only modules go on sys.path
    modules.mkdir(), dists.mkdir()
    (modules / 'fake_broken_plugin.py').write_text(BROKEN_PLUGIN)
    (modules / 'fake_good_plugin.py').write_text(GOOD_PLUGIN)
    # all three distributions (detsegbox, fake-broken, fake-good) declare 'backbones.resnet'
    fakes = [*_fake_distribution(dists, 'fake-broken',
                                 {'backbones.resnet': 'fake_broken_plugin'}).entry_points,
             *_fake_distribution(dists, 'fake-good',
                                 {'backbones.resnet': 'fake_good_plugin'}).entry_points]
    real_entry_points = metadata.entry_points

    def entry_points(**params):
        found = list(real_entry_points(**params))
        return found + fakes if params.get('group') == ENTRY_POINT_GROUP else found

    # the loader's global state and the registry are restored by monkeypatch after the test
    monkeypatch.setattr(plugins, '_loaded', dict(plugins._loaded))
    monkeypatch.setattr(plugins, '_failed', dict(plugins._failed))
    monkeypatch.setattr(MODELS, '_module_dict', dict(MODELS._module_dict))
    monkeypatch.setattr(plugins.metadata, 'entry_points', entry_points)
    monkeypatch.syspath_prepend(str(modules))
    registered_before = set(MODELS.module_dict)
    loaded_before = {(ep.dist.name, ep.name, ep.value) for ep in loaded_plugins()}
    try:
        with pytest.warns(RuntimeWarning) as record:
            load_plugins(force=True)
    finally:
        for module in ('fake_broken_plugin', 'fake_good_plugin'):
            sys.modules.pop(module, None)

    messages = [str(w.message) for w in record
                if 'fake_broken_plugin' in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith("toolbox plugin 'backbones.resnet' (module "
                                  "'fake_broken_plugin', distribution 'fake-broken') failed")
    assert "ModuleNotFoundError: No module named 'toolbox_missing_dependency_xyz'" in messages[0]
    assert 'model.HalfRegisteredIdentity' in messages[0]  # unregistered again
    assert FailedPlugin(name='backbones.resnet', module='fake_broken_plugin',
                        distribution='fake-broken',
                        error="ModuleNotFoundError: No module named "
                              "'toolbox_missing_dependency_xyz'") in failed_plugins()
    assert 'HalfRegisteredIdentity' not in MODELS.module_dict

    loaded = {(ep.dist.name, ep.name, ep.value) for ep in loaded_plugins()}
    assert loaded == loaded_before | {('fake-good', 'backbones.resnet', 'fake_good_plugin')}
    assert (DISTRIBUTION, 'backbones.resnet', 'toolbox_plugins.backbones.resnet') in loaded
    assert set(MODELS.module_dict) == registered_before | {'FakePluginIdentity'}
    assert type(MODELS.build(dict(type='FakePluginIdentity'))).__name__ == 'FakePluginIdentity'

    # first-party components still build (heads from the recipes that use them)
    retina = Config.fromfile(str(REPO_ROOT / 'configs/_base_/models/retinanet_r50_fpn.py'))
    deeplab = Config.fromfile(str(REPO_ROOT / 'configs/_base_/models/deeplabv3_r50-d8.py'))
    for cfg in (retina.model.bbox_head, deeplab.model.decode_head,
                dict(type='ResNet', depth=18),
                dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=2),
                dict(type='FocalLoss', gamma=2.0)):
        assert type(MODELS.build(cfg)).__name__ == cfg['type']
    assert type(MODELS.build(retina.model.bbox_head).loss_cls).__name__ == 'FocalLoss'

    # a second forced discovery imports nothing twice and retries the failed plugin only
    with pytest.warns(RuntimeWarning, match='fake_broken_plugin'):
        assert {(ep.dist.name, ep.name, ep.value) for ep in load_plugins(force=True)} == loaded
    sys.modules.pop('fake_broken_plugin', None)
    assert len([f for f in failed_plugins() if f.module == 'fake_broken_plugin']) == 1


def test_require_names_the_component_and_the_install_command():
    import math
    assert require('math', 'AnyComponent') is math
    with pytest.raises(ImportError) as info:
        require('toolbox_missing_dependency_xyz.sub', 'LoadNiftiFromFile', extra='medical')
    message = str(info.value)
    assert message.startswith("LoadNiftiFromFile needs the optional package "
                              "'toolbox_missing_dependency_xyz.sub'")
    assert "No module named 'toolbox_missing_dependency_xyz'" in message
    assert message.endswith("install it with `pip install 'detsegbox[medical]'`")
    assert info.value.name == 'toolbox_missing_dependency_xyz.sub'
    with pytest.raises(ImportError, match='install it with `pip install toolbox_missing'):
        require('toolbox_missing_dependency_xyz', 'SomeHead')
    with pytest.raises(ImportError, match='install it with `pip install opencv-python`'):
        require('toolbox_missing_dependency_xyz', 'SomeHead', pip_name='opencv-python')


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
