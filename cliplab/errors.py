"""User-facing errors. The CLI prints their message on one line and exits with code 2 (no traceback)."""
import re


class CliplabError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM; SIGINT is Python's own KeyboardInterrupt): ``signum`` names it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class ModelLoadError(CliplabError):
    pass


class DatasetError(CliplabError):
    pass


class ParameterError(CliplabError):
    """A bad value for a named parameter of a library function (``templates``, ``split``, ``target``...).

    The message names parameters as Python callers know them; the CLI shows flags instead
    (:func:`cliplab.cli.options.handle_errors`). Other parameters named in the message are written ``{p:name}``
    (e.g. ``"choose another {p:name}, or pass {p:force}"``), so each caller sees its own spelling.

    The text is ``param 'value': message``. ``quote=False`` shows the value as it is (paths, device names:
    ``device cuda:3: ...``). ``prefix=False`` makes ``message`` the whole text, for sentences that do not start
    with the parameter; it then names the parameter itself: ``ParameterError("levels", 0, "{p:levels} must be
    >= 1", prefix=False)``."""

    def __init__(self, param: str, value, message: str, *, quote: bool = True, prefix: bool = True):
        self.param, self.value, self.message = param, value, message
        self.quote, self.prefix = quote, prefix
        super().__init__(self.render(lambda p: p))

    def render(self, spell) -> str:
        """The message with every parameter spelled by ``spell`` (identity for Python, the flag for the CLI)."""
        text = _PARAM.sub(lambda m: spell(m.group(1)), self.message)
        if not self.prefix:
            return text
        if self.value is None:
            return f"{spell(self.param)}: {text}"
        return f"{spell(self.param)} {_show(self.value) if self.quote else self.value}: {text}"


class ModelParameterError(ModelLoadError, ParameterError):
    """A model that cannot be loaded because of a parameter (``model``, ``pretrained``, ``device``, ``precision``)."""


class DatasetParameterError(DatasetError, ParameterError):
    """A dataset that cannot be loaded because of a parameter (``dataset``, ``split``, ``classnames``, ``gt``...)."""


_PARAM = re.compile(r"\{p:(\w+)\}")


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)
