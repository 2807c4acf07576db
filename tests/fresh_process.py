"""Run code, or the cliplab CLI, in a fresh Python process (offline, one thread), for tests of what a process
imports: a warm study must import no torch (tests/models/test_memo.py, tests/models/test_warm_studies.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``code`` (dedented) run by this interpreter in the repository root; it must exit 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLIPLAB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def cli(args: list[str]) -> tuple[list[str], str]:
    """``cliplab ARGS`` in a fresh process (it must succeed): the modules loaded at its end, and its stderr."""
    out = python(f"""
        import json, sys
        from cliplab.cli import main
        sys.argv = ["cliplab", *{args!r}]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        print("MODULES " + json.dumps(sorted(sys.modules)))
    """)
    return json.loads(out.stdout.split("MODULES ", 1)[1]), out.stderr
