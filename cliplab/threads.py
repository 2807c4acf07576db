"""What cliplab's threads share. Images are decoded in a thread beside the tower (``embed.engine.prefetched``), and
``warnings.catch_warnings`` is not thread-safe: it swaps the process-wide filter list on entry and puts back the list
it saw on exit, so two threads entering and leaving out of order leave one's filters in force for the rest of the
process (an "ignore everything" that silences later warnings, or a decompression-bomb "error" dropped while an image
is decoded). Every ``catch_warnings`` in cliplab goes through :func:`catch_warnings`, under one lock."""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Iterator

WARNINGS_LOCK = threading.RLock()


def _fresh_lock() -> None:
    """A forked child (a DataLoader worker) starts with a free lock, whatever thread held it in the parent."""
    global WARNINGS_LOCK
    WARNINGS_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock)


@contextlib.contextmanager
def catch_warnings(**kwargs) -> Iterator:
    """``warnings.catch_warnings(**kwargs)`` while holding :data:`WARNINGS_LOCK` (re-entrant)."""
    with WARNINGS_LOCK, warnings.catch_warnings(**kwargs) as caught:
        yield caught
