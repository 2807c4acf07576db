"""User-facing errors. The CLI prints their message on one line and exits with code 2 (no traceback)."""


class CliplabError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class ModelLoadError(CliplabError):
    pass


class DatasetError(CliplabError):
    pass


class ParameterError(CliplabError):
    """A bad value for a named parameter of a library function (``templates``, ``split``, ``target``...). The
    message names the parameter as Python callers know it; the CLI shows the flag instead
    (:func:`cliplab.cli.options.handle_errors`)."""

    def __init__(self, param: str, value, message: str):
        self.param, self.value, self.message = param, value, message
        super().__init__(f"{param} {_show(value)}: {message}")

    def for_flag(self, flag: str) -> str:
        return f"{flag} {_show(self.value)}: {self.message}"


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)
