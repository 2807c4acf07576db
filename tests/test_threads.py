"""cliplab.threads: catch_warnings under one lock, since images are decoded in a thread beside the tower."""
import re
import threading
import warnings
from pathlib import Path

from cliplab.threads import catch_warnings


def test_two_threads_catching_warnings_take_turns_and_leave_the_filters_as_they_were():
    """Review: ``warnings.catch_warnings`` swaps the process-wide filter list; entered in one thread and left in the
    other's order, it leaves one thread's filters in force (an 'ignore' that silences the rest of the run). Under
    the lock the second waits for the first to leave."""
    before = list(warnings.filters)
    inside, release, order = threading.Event(), threading.Event(), []

    def first():
        with catch_warnings():
            warnings.simplefilter("ignore")
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    def second():
        inside.wait(10)
        with catch_warnings():
            warnings.simplefilter("error", UserWarning)
            order.append("second in")
        order.append("second out")

    a, b = threading.Thread(target=first), threading.Thread(target=second)
    a.start()
    b.start()
    inside.wait(10)
    b.join(0.3)  # the second is waiting for the lock, not inside
    assert order == ["first in"]
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["first in", "first out", "second in", "second out"]
    assert warnings.filters == before


def test_every_catch_warnings_in_cliplab_goes_through_the_lock():
    root = Path(__file__).resolve().parents[1] / "cliplab"
    bare = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "threads.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bwarnings\.catch_warnings\(", line)]
    assert bare == []


def test_a_forked_child_starts_with_a_free_lock():
    """A DataLoader worker forked while another thread holds the lock must not wait for it forever."""
    import os

    import cliplab.threads as threads

    if not hasattr(os, "fork"):
        return
    held, done = threading.Event(), threading.Event()

    def hold():
        with threads.catch_warnings():
            held.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: the lock must be free here
        ok = threads.WARNINGS_LOCK.acquire(timeout=5)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    done.set()
    t.join(10)
    assert os.WEXITSTATUS(status) == 0
