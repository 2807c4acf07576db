"""Runs the cliplab CLI in this process (its arguments as JSON in sys.argv[1]) and reports on stderr, in one
``PROBE {...}`` line: the exit code, the wall seconds, the heavy modules it imported and the call stack of the first
import of each (for benchmarks/warm_imports.py)."""
import json
import sys
import time
import traceback

t0 = time.perf_counter()
HEAVY = ("torch", "open_clip", "torchvision", "openvino", "scipy", "sklearn", "faiss", "pandas", "pyarrow", "matplotlib")
SUBMODULES = ("scipy.stats", "scipy.optimize", "scipy.linalg", "scipy.special")  # scipy's parts, told apart
first = {}


def _where(frame) -> str:
    return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno} {frame.name}"


class Finder:
    """Sees every import before the real finders do; records the stack of the first import of each heavy module."""

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        key = name if name in SUBMODULES else top
        if (top in HEAVY or key in HEAVY) and key not in first and name not in sys.modules:
            stack = [_where(f) for f in traceback.extract_stack()[:-1]
                     if "importlib._bootstrap" not in f.filename and "<frozen" not in f.filename]
            first[key] = stack[-12:]
        return None


sys.meta_path.insert(0, Finder())
from cliplab.cli import main  # noqa: E402 - after the finder, so its imports are seen

sys.argv = ["cliplab", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
mods = sorted(m for m in sys.modules if (m in HEAVY) or m in SUBMODULES)
sys.stderr.write("\nPROBE " + json.dumps({"code": code, "wall": time.perf_counter() - t0, "heavy": mods,
                                          "first": first}) + "\n")
