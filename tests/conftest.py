"""Shared fixtures: the core and every installed plugin are registered once per session."""
from pathlib import Path

import pytest

import toolbox  # noqa: F401  (registers the core)
from toolbox.plugins import load_plugins

load_plugins()

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'


def shared_data(name: str) -> Path:
    """Path of a real dataset under ../shared/data, or skip the test if it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f'real dataset {path} is not available on this machine')
    return path


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A small copy of the embedded demo dataset (COCO + VOC layouts)."""
    from toolbox.datasets import make_demo_dataset
    return make_demo_dataset(str(tmp_path_factory.mktemp('demo')), num_train=16, num_val=8)
