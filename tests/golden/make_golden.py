"""Write the golden outputs ONCE (issue 14, before the refactor). Refuses to overwrite: the golden files are the
reference the refactored code is compared with, never regenerated to make a test pass.

    PYTHONPATH=. .venv/bin/python tests/golden/make_golden.py [--check-only]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.golden import harness  # noqa: E402


def main() -> None:
    existing = sorted(harness.GOLDEN_DIR.glob("*.json"))
    if existing and "--check-only" not in sys.argv:
        sys.exit(f"golden files exist ({len(existing)}); they are never regenerated")
    with tempfile.TemporaryDirectory() as tmp:
        work, cache = Path(tmp) / "work", Path(tmp) / "cache"
        work.mkdir()
        outputs = harness.run(work, cache)
    if "--check-only" in sys.argv:
        bad = {n: harness.diff(harness.load(n), o) for n, o in outputs.items()}
        for n, d in bad.items():
            print(n, "OK" if not d else "\n  ".join([f"{len(d)} differences:"] + d[:20]))
        return
    harness.write(outputs)
    print(f"wrote {len(outputs)} golden files to {harness.GOLDEN_DIR}")


if __name__ == "__main__":
    main()
