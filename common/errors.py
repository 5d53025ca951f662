"""Errors caused by the user's input, reported as one line without a traceback."""


class UserError(Exception):
    """A mistake the user can fix (a bad value, a missing file); the script exits with `exit_status`."""

    exit_status = 1


class ConfigError(UserError):
    """An invalid hyperparameter or command-line argument."""

    exit_status = 2
