"""First-party plugins of this family; each module is its own entry point (setup.py)."""
