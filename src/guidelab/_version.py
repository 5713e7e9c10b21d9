"""The package version, in a module of its own so that every layer can read it without
importing the package's top level (which imports the layers)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
