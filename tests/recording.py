"""A :class:`cliplab.progress.Progress` that records what library code reports instead of showing it (tests import
it as ``from recording import Recording``: tests/ is on sys.path, as for ``golden``)."""
import contextlib

from cliplab.progress import Bar, Progress


class Recording(Progress):
    """Records the descriptions of bars, and notes and warnings, in lists."""

    def __init__(self):
        self.bars, self.notes, self.warnings = [], [], []

    @contextlib.contextmanager
    def bar(self, total, description, unit="img"):
        self.bars.append(description)
        yield Bar()

    def note(self, message):
        self.notes.append(message)

    def warn(self, message):
        self.warnings.append(message)
