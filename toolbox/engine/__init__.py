from .hooks import ClassCountsHook, RNGStateHook
from .precision import AutocastOptimWrapper, ChannelsLastHook, apply_speed_options
from .runner import ToolboxRunner, load_checkpoint_file
from .setup import (DataPathError, build_runner, check_data_paths, close_distributed,
                    init_distributed, load_config)

__all__ = ['ToolboxRunner', 'RNGStateHook', 'ClassCountsHook', 'load_checkpoint_file',
           'build_runner', 'check_data_paths', 'DataPathError', 'close_distributed',
           'init_distributed', 'load_config', 'AutocastOptimWrapper', 'ChannelsLastHook',
           'apply_speed_options']
