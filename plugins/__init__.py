"""First-party plugins of the toolbox, installed as ``toolbox_plugins``."""
