"""Errors that are the user's to fix: printed as one clear line, never a traceback."""


class UserError(Exception):
    """Bad input (config value, path, name): the message names the bad value and the accepted ones."""


class AssetMissingError(UserError):
    """A hub model or dataset is not cached and cannot be downloaded (offline)."""
