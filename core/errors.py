"""Errors that the command line reports as one clear line (no traceback)."""


class PlyrError(Exception):
    """An expected failure: bad configuration, unreachable service, invalid input."""


class ConfigError(PlyrError):
    pass


class DatabaseError(PlyrError):
    pass


class MigrationError(PlyrError):
    pass
