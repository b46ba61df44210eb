"""First-party backbones."""
from . import resnet  # noqa: F401
