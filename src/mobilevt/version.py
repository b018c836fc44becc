"""The package version, in a module of its own so that internal code need not import the package."""

__version__ = "0.1.0"
