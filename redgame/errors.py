"""Errors that the CLI turns into one-line messages (no traceback)."""


class UserError(ValueError):
    """Bad input from the user: a config, a file, a parameter. The message names the culprit."""
