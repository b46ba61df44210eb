"""toolbox: a plugin-based object detection and semantic segmentation toolbox.

Importing the package registers the core components (datasets, transforms, metrics, model
compositions, task utilities, engine hooks). Plugins, first-party ones included, are found
through the ``toolbox.plugins`` entry-point group by :func:`toolbox.plugins.load_plugins`.
"""
__version__ = '0.1.0'

from . import apis, datasets, engine, evaluation, models, visualization  # noqa: E402,F401
