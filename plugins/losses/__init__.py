"""First-party losses."""
from . import box_losses, focal_loss  # noqa: F401
from . import cross_entropy  # noqa: F401
