"""genloom mesh3d package."""

__version__ = "0.1.0"
