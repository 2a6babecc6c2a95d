"""The package version (one place; read by sim/__init__ and run metadata)."""
__version__ = "0.1.0"
