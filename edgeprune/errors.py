"""User-facing errors. The CLI prints them as one red line and exits with code 2."""


class UserError(Exception):
    """A mistake in what the user asked for (not a bug in edgeprune)."""


class UnknownNameError(UserError):
    """A model, data set, method or other registry name that does not exist."""


class DataError(UserError):
    """A data set that cannot be read or does not have the expected layout."""


class WeightsError(UserError):
    """A weights file that is missing, corrupt, or does not fit the model."""


class ShapeError(UserError):
    """A model that does not accept the data set's inputs or classes."""


class ConfigError(UserError):
    """A recipe or option with an invalid value or an unknown key."""


class RunDirError(UserError):
    """A run directory that exists, is missing, or does not match the recipe."""
