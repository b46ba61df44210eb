"""First-party necks. Each module is its own entry point (see setup.py), so a module that
fails to import disables nothing else."""
