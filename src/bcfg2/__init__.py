"""A Bcfg2-compatible configuration-management server."""

__version__ = "0.1.0"
