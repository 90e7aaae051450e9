"""Errors shared across packages."""


class ConfigError(ValueError):
    """A configuration file or value that does not fit the schema."""
