"""Runs the cliplab CLI (argv as JSON in sys.argv[1]) and reports, on stderr, the heavy modules it imported and the
stack of the first import of each (for benchmarks/warm_imports.py)."""
"""Run the cliplab CLI in this process; record the first import stack of each heavy module."""
import json, sys, time, traceback
t0 = time.perf_counter()
HEAVY = ("torch", "open_clip", "torchvision", "openvino", "scipy", "sklearn", "faiss", "pandas", "pyarrow", "matplotlib")
first = {}

class Finder:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        key = name if name in ("scipy.stats", "scipy.optimize", "scipy.linalg", "scipy.special") else top
        if (top in HEAVY or key in HEAVY) and key not in first and name not in sys.modules:
            stack = [f"{f.filename.split('site-packages/')[-1].split('wt-warm2/')[-1]}:{f.lineno} {f.name}"
                     for f in traceback.extract_stack()[:-1] if "importlib._bootstrap" not in f.filename and "<frozen" not in f.filename]
            first[key] = stack[-12:]
        return None

sys.meta_path.insert(0, Finder())
from cliplab.cli import main
sys.argv = ["cliplab", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
mods = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY and "." not in m or m in ("scipy.stats", "scipy.optimize", "scipy.linalg", "scipy.special"))
sys.stderr.write("\nPROBE " + json.dumps({"code": code, "wall": time.perf_counter() - t0, "heavy": mods, "first": first}) + "\n")
