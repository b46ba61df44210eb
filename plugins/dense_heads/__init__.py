"""First-party dense (anchor / point based) detection heads, one entry point per module."""
