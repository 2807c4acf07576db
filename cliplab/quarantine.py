"""Damaged cache entries moved aside, never deleted, and reported once per run.

A cache entry that cannot be read or does not match the checksum written with it (an embedding shard, a converted
OpenVINO model) is moved into ``<cache>/quarantine/`` under the same relative path (a number is added to the name
when that path is taken), with one line per move appended to ``<cache>/quarantine/log.jsonl`` (when, what, why),
and its contents are recomputed as if they had never been cached. Each move is recorded here; inside
:func:`one_report` (every study run, :func:`cliplab.studies.execute`) all the moves of the block become one warning
at its end, elsewhere each caller's moves become one warning at once.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from cliplab.progress import warn

FOLDER = "quarantine"
LOG = "log.jsonl"


@dataclass(frozen=True)
class Moved:
    """One damaged cache entry: ``what`` it was, its ``paths``, where they went (``dest``: None when they could not
    be moved) and ``reason``."""
    root: Path
    what: str
    paths: tuple[Path, ...]
    dest: tuple[Path, ...] | None
    reason: str


def _numbered(path: Path, n: int) -> Path:
    """``path`` with ``.n`` before its suffix (``x.bin`` -> ``x.1.bin``): a group keeps matching names."""
    return path if n == 0 else path.with_name(f"{path.stem}.{n}{path.suffix}")


def move_aside(root: Path, paths: Sequence[Path], what: str, reason: str) -> Moved | None:
    """Move the files (or folders) ``paths`` of one damaged entry of the cache ``root`` into its quarantine, keeping
    their relative paths; the record of the move, or None when they vanished first (another process moved them)."""
    root = Path(root)
    present = [Path(p) for p in paths if os.path.lexists(p)]
    if not present:
        return None
    base = root / FOLDER
    targets = [base / p.relative_to(root) for p in present]
    n = 0
    while any(os.path.lexists(_numbered(t, n)) for t in targets):
        n += 1
    dest: list[Path] = []
    try:
        for src, target in zip(present, targets):
            to = _numbered(target, n)
            to.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, to)  # same filesystem: a rename, nothing copied or deleted
            dest.append(to)
    except FileNotFoundError:
        if not dest:
            return None  # moved by another process meanwhile
    except OSError as exc:
        reason = f"{reason}; could not be moved aside ({exc.strerror or exc}), so it is ignored instead"
        dest = []
    moved = Moved(root, what, tuple(present), tuple(dest) or None, reason)
    _log(moved)
    return moved


def _log(moved: Moved) -> None:
    if not moved.dest:
        return
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "what": moved.what, "reason": moved.reason,
            "from": [str(p.relative_to(moved.root)) for p in moved.paths],
            "to": [str(p.relative_to(moved.root)) for p in moved.dest]}
    with contextlib.suppress(OSError):  # the log is a courtesy: a full disk must not hide the warning
        with open(moved.root / FOLDER / LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


_RUN: contextvars.ContextVar[list[Moved] | None] = contextvars.ContextVar("cliplab_quarantine", default=None)


@contextlib.contextmanager
def one_report() -> Iterator[None]:
    """Collect the moves made inside the block and report them as one warning when it ends (nested blocks report
    through the outermost)."""
    if _RUN.get() is not None:
        yield
        return
    moves: list[Moved] = []
    token = _RUN.set(moves)
    try:
        yield
    finally:
        _RUN.reset(token)
        report(moves)


def record(moves: Sequence[Moved | None]) -> None:
    """Report ``moves``: to the enclosing :func:`one_report`, else as one warning now."""
    moves = [m for m in moves if m is not None]
    collected = _RUN.get()
    if collected is not None:
        collected.extend(moves)
    else:
        report(moves)


def report(moves: Sequence[Moved]) -> None:
    """One warning for ``moves``: how many entries, of what, why, and where they went."""
    if not moves:
        return
    kinds = Counter(m.what for m in moves)
    reasons = "; ".join(f"{m.paths[0].name}: {m.reason}" for m in moves[:3]) + ("; ..." if len(moves) > 3 else "")
    places = sorted({str(m.root / FOLDER) for m in moves if m.dest})
    n = len(moves)
    where = (f"moved to {', '.join(places)} (kept, not deleted; see {LOG} there)" if places else "left in place")
    counts = ", ".join(f"{c} {w}" + ("s" if c > 1 else "") for w, c in kinds.items())
    warn(f"the cache held {n} damaged entr{'y' if n == 1 else 'ies'} ({counts}: {reasons}); {where}, and "
         f"{'its' if n == 1 else 'their'} contents were computed again")
