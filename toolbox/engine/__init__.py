from .hooks import ClassCountsHook, RNGStateHook
from .runner import ToolboxRunner, load_checkpoint_file
from .setup import build_runner, close_distributed, init_distributed, load_config

__all__ = ['ToolboxRunner', 'RNGStateHook', 'ClassCountsHook', 'load_checkpoint_file',
           'build_runner', 'close_distributed', 'init_distributed', 'load_config']
