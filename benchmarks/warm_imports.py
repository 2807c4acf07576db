"""Before/after of the warm studies: each study on its own cache, a cold run then two warm runs, each a fresh
process recording its wall time, the heavy modules it imported and the call stack of their first import
(_import_probe.py); the outputs of the cold and first warm run compared.

    python benchmarks/warm_imports.py CHECKOUT OUT.json [study,study,...]

CHECKOUT: the cliplab checkout to measure (its .venv runs it)."""
import json, os, subprocess, sys, time, shutil, tempfile
from pathlib import Path
WT = Path(sys.argv[1]); out_json = Path(sys.argv[2]); only = sys.argv[3].split(",") if len(sys.argv) > 3 else None
PY = str(WT / ".venv/bin/python")
img = str(Path(tempfile.gettempdir()) / "cliplab-warm-query.png")
if not os.path.exists(img):
    from PIL import Image; Image.new("RGB", (64, 64), (200, 30, 30)).save(img)
L = ["--limit", "300"]
S = {
 "prompts": ["prompts", "-d", "shapes", *L, "-t", "openai-imagenet-7", "-o", "{o}.json"],
 "zeroshot": ["zeroshot", "-d", "shapes", *L, "-o", "{o}.json"],
 "probe": ["probe", "-d", "shapes:shape", *L, "--train-limit", "600", "--kshot", "1,4", "--seeds", "2", "-o", "{o}.json"],
 "compare": ["compare", "-d", "shapes", *L, "-o", "{o}.csv"],
 "compare_probe": ["compare", "-d", "shapes", *L, "--probe", "--train-limit", "600", "-o", "{o}.csv"],
 "retrieval": ["retrieval", "-d", "shapes", *L, "-o", "{o}.json"],
 "search": ["search", "a red circle", "a large blue square", "-d", "shapes", *L, "-k", "5", "-o", "{o}.csv"],
 "search_image": ["search", "--image", img, "--plus", "red", "-d", "shapes:color", *L, "-k", "4", "-o", "{o}.csv"],
 "queries": ["queries", "-d", "shapes", *L, "-o", "{o}.json"],
 "similar": ["similar", "-d", "shapes:color", *L, "-o", "{o}.json"],
 "cluster": ["cluster", "-d", "shapes:color", *L, "--k", "6,12", "-o", "{o}.csv"],
 "inspect": ["inspect", img, "--classes", "red circle,blue square,green dot", "-o", "{o}.csv"],
 "attack": ["attack", "typographic", "-d", "shapes:position", "--limit", "200", "-o", "{o}.json"],
}
res = json.loads(out_json.read_text()) if out_json.exists() else {}
for name, argv in S.items():
    if only and name not in only: continue
    cache = Path(tempfile.mkdtemp(prefix=f"w2-{name}-"))
    row = {}
    for run in ("cold", "warm", "warm2"):
        a = [x.replace("{o}", str(cache / run)) for x in argv] + ["--cache-dir", str(cache / "c"), "-q", "--backend", "torch"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CLIPLAB_OFFLINE": "1", "PYTHONPATH": str(WT)}
        t0 = time.perf_counter()
        p = subprocess.run([PY, str(Path(__file__).resolve().parent / "_import_probe.py"), json.dumps(a)], capture_output=True, text=True, env=env, cwd=str(WT))
        wall = time.perf_counter() - t0
        line = [l for l in p.stderr.splitlines() if l.startswith("PROBE ")]
        if not line:
            row[run] = {"error": p.stderr[-800:]}; break
        info = json.loads(line[-1][6:]); info["proc_wall"] = wall
        if info["code"]: info["err"] = p.stderr[-800:]
        outs = sorted(str(f) for f in cache.glob(run + ".*"))
        info["outputs"] = outs
        row[run] = info
    # compare outputs cold/warm
    same = None
    try:
        c = sorted(cache.glob("cold.*")); w = sorted(cache.glob("warm.*"))
        if c and w:
            def norm(p):
                t = p.read_text()
                if p.suffix == ".json":
                    d = json.loads(t)
                    for k in ("timing", "timestamp"): d.pop(k, None)
                    return d
                return t
            same = norm(c[0]) == norm(w[0])
    except Exception as e:
        same = repr(e)
    row["same"] = same
    res[name] = row
    print(name, {r: (v.get("proc_wall"), v.get("heavy"), v.get("code"), v.get("error", "")[-300:]) for r, v in row.items() if isinstance(v, dict)}, "same", same, flush=True)
    shutil.rmtree(cache, ignore_errors=True)
out_json.write_text(json.dumps(res, indent=1))
