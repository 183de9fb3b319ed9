"""Errors that carry a message meant for the user, not a traceback."""


class FinetuneError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible setting.

    The CLI prints ``str(error)`` on one line and exits non-zero; the UI shows it in a
    message box. Anything else that escapes is a bug in this project.
    """


class ConfigError(FinetuneError):
    """A run configuration (YAML, --set override, UI field) is wrong."""


class DataError(FinetuneError):
    """A dataset file cannot be read or has bad rows."""


class ModelLoadError(FinetuneError):
    """A model source cannot be found or loaded."""
