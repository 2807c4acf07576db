"""Before/after of the warm studies: each study on its own cache, a cold run then two warm runs, each a fresh
process recording its wall time, the heavy modules it imported and the call stack of their first import
(_import_probe.py); the outputs of the cold and first warm run compared.

    python benchmarks/warm_imports.py CHECKOUT OUT.json [study,study,...]

CHECKOUT: the cliplab checkout to measure (its .venv runs it), so one script measures main and a branch in the same
session. OUT.json gathers the rows (studies measured before are kept) and the CPU they ran on."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import cpu_info, cpu_label

PROBE = Path(__file__).resolve().parent / "_import_probe.py"
RUNS = ("cold", "warm", "warm2")
VARYING = ("timing", "timestamp")  # a record's wall-clock fields


def studies(query_image: str) -> dict[str, list[str]]:
    """study -> its CLI arguments ({o}: the output path stem)."""
    lim = ["--limit", "300"]
    return {
        "prompts": ["prompts", "-d", "shapes", *lim, "-t", "openai-imagenet-7", "-o", "{o}.json"],
        "zeroshot": ["zeroshot", "-d", "shapes", *lim, "-o", "{o}.json"],
        "probe": ["probe", "-d", "shapes:shape", *lim, "--train-limit", "600", "--kshot", "1,4", "--seeds", "2",
                  "-o", "{o}.json"],
        "compare": ["compare", "-d", "shapes", *lim, "-o", "{o}.csv"],
        "compare_probe": ["compare", "-d", "shapes", *lim, "--probe", "--train-limit", "600", "-o", "{o}.csv"],
        "retrieval": ["retrieval", "-d", "shapes", *lim, "-o", "{o}.json"],
        "search": ["search", "a red circle", "a large blue square", "-d", "shapes", *lim, "-k", "5", "-o", "{o}.csv"],
        "search_image": ["search", "--image", query_image, "--plus", "red", "-d", "shapes:color", *lim, "-k", "4",
                         "-o", "{o}.csv"],
        "queries": ["queries", "-d", "shapes", *lim, "-o", "{o}.json"],
        "similar": ["similar", "-d", "shapes:color", *lim, "-o", "{o}.json"],
        "cluster": ["cluster", "-d", "shapes:color", *lim, "--k", "6,12", "-o", "{o}.csv"],
        "inspect": ["inspect", query_image, "--classes", "red circle,blue square,green dot", "-o", "{o}.csv"],
        "attack": ["attack", "typographic", "-d", "shapes:position", "--limit", "200", "-o", "{o}.json"],
    }


def probe(checkout: Path, args: list[str]) -> dict:
    """One fresh process of the checkout's cliplab: what _import_probe.py reports, with the process's wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLIPLAB_OFFLINE": "1", "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    p = subprocess.run([str(checkout / ".venv/bin/python"), str(PROBE), json.dumps(args)], capture_output=True,
                       text=True, env=env, cwd=str(checkout))
    wall = time.perf_counter() - t0
    lines = [line for line in p.stderr.splitlines() if line.startswith("PROBE ")]
    if not lines:
        return {"error": p.stderr[-800:]}
    info = {**json.loads(lines[-1][len("PROBE "):]), "proc_wall": wall}
    if info["code"]:
        info["err"] = p.stderr[-800:]
    return info


def output(path: Path):
    """A run's output file as compared: JSON without its wall-clock fields, anything else as text."""
    text = path.read_text()
    if path.suffix != ".json":
        return text
    record = json.loads(text)
    for key in VARYING:
        record.pop(key, None)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("only", nargs="?", default=None, help="comma-separated studies (default: all)")
    args = ap.parse_args()
    query_image = Path(tempfile.gettempdir()) / "cliplab-warm-query.png"
    if not query_image.exists():
        from PIL import Image

        Image.new("RGB", (64, 64), (200, 30, 30)).save(query_image)
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    res["cpu"], res["cpu_model"] = cpu_info(), cpu_label()
    only = args.only.split(",") if args.only else None
    for name, argv in studies(str(query_image)).items():
        if only and name not in only:
            continue
        cache = Path(tempfile.mkdtemp(prefix=f"warm-imports-{name}-"))
        row: dict = {}
        for run in RUNS:
            filled = [a.replace("{o}", str(cache / run)) for a in argv]
            row[run] = probe(args.checkout, [*filled, "--cache-dir", str(cache / "c"), "-q", "--backend", "torch"])
            if "error" in row[run]:
                break
            row[run]["outputs"] = sorted(str(f) for f in cache.glob(run + ".*"))
        cold, warm = sorted(cache.glob("cold.*")), sorted(cache.glob("warm.*"))
        row["same"] = output(cold[0]) == output(warm[0]) if cold and warm else None
        res[name] = row
        print(name, {r: (v.get("proc_wall"), v.get("heavy"), v.get("code"), v.get("error", "")[-300:])
                     for r, v in row.items() if isinstance(v, dict)}, "same", row["same"], flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
