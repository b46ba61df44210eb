"""First-party heads."""
from . import retina_head  # noqa: F401
