from .hooks import RNGStateHook
from .runner import ToolboxRunner, load_checkpoint_file
from .setup import build_runner, init_distributed, load_config

__all__ = ['ToolboxRunner', 'RNGStateHook', 'load_checkpoint_file', 'build_runner',
           'init_distributed', 'load_config']
