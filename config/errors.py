"""Errors raised for settings, rules and model files that cannot be used."""


class NurtureError(Exception):
    """Root of the engine's own errors."""


class ConfigError(NurtureError):
    """A settings or rules file, or an environment variable, is invalid.

    The message names the file or variable, the place in it and the problem.
    """
