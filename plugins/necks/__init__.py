"""First-party necks."""
from . import fpn  # noqa: F401
from . import tcb  # noqa: F401
