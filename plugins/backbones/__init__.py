"""First-party backbones."""
from . import resnet  # noqa: F401
from . import refinedet_resnet, vgg  # noqa: F401
from . import xception  # noqa: F401
