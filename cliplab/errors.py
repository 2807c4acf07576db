"""User-facing errors. The CLI prints their message on one line and exits with code 2 (no traceback)."""
import re


class CliplabError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class ModelLoadError(CliplabError):
    pass


class DatasetError(CliplabError):
    pass


class ParameterError(CliplabError):
    """A bad value for a named parameter of a library function (``templates``, ``split``, ``target``...).

    The message names parameters as Python callers know them; the CLI shows flags instead
    (:func:`cliplab.cli.options.handle_errors`). Other parameters named in the message are written ``{p:name}``
    (e.g. ``"choose another {p:name}, or pass {p:force}"``), so each caller sees its own spelling."""

    def __init__(self, param: str, value, message: str):
        self.param, self.value, self.message = param, value, message
        super().__init__(self.render(lambda p: p))

    def render(self, spell) -> str:
        """The message with every parameter spelled by ``spell`` (identity for Python, the flag for the CLI)."""
        text = _PARAM.sub(lambda m: spell(m.group(1)), self.message)
        return f"{spell(self.param)} {_show(self.value)}: {text}" if self.value is not None else \
            f"{spell(self.param)}: {text}"


_PARAM = re.compile(r"\{p:(\w+)\}")


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)
