"""First-party heads."""
from . import retina_head  # noqa: F401
from . import refinedet_head  # noqa: F401
from . import deeplab_head  # noqa: F401
