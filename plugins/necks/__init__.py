"""First-party necks."""
from . import fpn  # noqa: F401
