"""First-party semantic segmentation decode heads, one entry point per module."""
