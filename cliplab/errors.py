"""User-facing errors. The CLI prints their message on one line and exits with code 2 (no traceback)."""


class CliplabError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class ModelLoadError(CliplabError):
    pass


class DatasetError(CliplabError):
    pass
