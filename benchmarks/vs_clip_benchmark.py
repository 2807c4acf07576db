"""End to end, cold, as a user runs it: cliplab (OpenVINO and torch backends) vs CLIP_benchmark's zero-shot
`evaluate()`, side by side in one run on the shared Food-101 and CIFAR-10 images.

    .venv/bin/python benchmarks/vs_clip_benchmark.py [--sets food101,cifar10] [--cifar-per-class 100]

CLIP_benchmark is installed in its own virtual environment (`benchmarks/.venv-clip-benchmark`, created on the first
run with the same torch and torchvision as cliplab's; never a cliplab dependency) and driven by
`_clip_benchmark_eval.py` with its CLI defaults (batch 64, 4 DataLoader workers). Both tools load the same
seeded random-weight checkpoint (no pretrained weights here: speed and agreement are what is measured) through
open_clip, and read the same folder of JPEGs with the same class names and templates.

Every cliplab run is the CLI in a fresh process with a fresh cache directory (`--cache-dir`), so model loading, the
OpenVINO conversion of both towers and every embedding are paid inside the timed wall clock. CLIP_benchmark's wall
clock includes its imports and model load too. Measured:
- one zero-shot pass ('a photo of a {}.'): CLIP_benchmark vs `cliplab zeroshot` (torch; auto, labelled with the
  backend its measurement chose on this CPU: in a fresh cache directory that measurement is inside the wall clock,
  as on a user's first run);
- the 7-template study (openai-imagenet-7): CLIP_benchmark's evaluate() once per template (in one process, the model
  loaded once) vs one `cliplab prompts` run (each template scored alone, plus the ensemble and paired statistics);
- agreement: per-image top-1 of OpenVINO vs the torch backend vs CLIP_benchmark, and each template's top-1 accuracy.
"""
from __future__ import annotations

import argparse
import csv
import importlib.metadata as md
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_label, machine, markdown_table, save, write_docs_region

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VENV = ROOT / "benchmarks" / ".venv-clip-benchmark"
CLIP_BENCHMARK = "clip_benchmark==1.6.2"
NUMPY = "numpy<2.3"  # CLIP_benchmark 1.6.2's accuracy() calls float() on a 1-element array: an error from NumPy 2.4
ONE = "a photo of a {}."
SEVEN = "openai-imagenet-7"


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={md.version('torch')}",
                        f"torchvision=={md.version('torchvision')}", CLIP_BENCHMARK, NUMPY], check=True)
    return python


def image_sets(names: list[str], cifar_per_class: int, work: Path) -> dict[str, Path]:
    """name -> a folder of class subfolders. CIFAR-10: the first N files (sorted) of each class, as symlinks."""
    sets = {}
    for name in names:
        if name == "food101":
            sets[name] = SHARED / "food101-10" / "test"
        elif name == "cifar10":
            folder = work / f"cifar10-{cifar_per_class}"
            for cls in sorted(p for p in (SHARED / "cifar10-test").iterdir() if p.is_dir()):
                (folder / cls.name).mkdir(parents=True, exist_ok=True)
                for f in sorted(cls.iterdir())[:cifar_per_class]:
                    (folder / cls.name / f.name).symlink_to(f)
            sets[name] = folder
        else:
            raise SystemExit(f"error: --sets {name!r}: choose food101 or cifar10")
        if not sets[name].is_dir():
            raise SystemExit(f"error: {sets[name]} is missing (../shared/data is needed)")
    return sets


def random_checkpoint(model: str, path: Path) -> None:
    import open_clip
    import torch

    torch.manual_seed(0)
    torch.save(open_clip.create_model(model).state_dict(), path)


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def cliplab_run(command: str, model: str, ckpt: Path, folder: Path, templates: str, backend: str, work: Path,
                tag: str) -> dict:
    cache = Path(tempfile.mkdtemp(prefix=f"cache-{tag}-", dir=work))  # cold: nothing converted or embedded yet
    out = work / f"{tag}.json"
    cmd = [str(Path(sys.executable).parent / "cliplab"), command, "--model", model, "--pretrained", str(ckpt),
           "--dataset", str(folder), "--templates", templates, "--device", "cpu", "--backend", backend,
           "--cache-dir", str(cache), "-o", str(out), "--quiet"]
    if command == "zeroshot":
        cmd += ["--predictions", str(work / f"{tag}.csv")]
    seconds = timed(cmd)
    rec = json.loads(out.read_text())
    result = {"seconds": seconds, "record": rec}
    if command == "zeroshot":
        with open(work / f"{tag}.csv") as f:
            result["top1"] = {row["id"]: row["top1_label"] for row in csv.DictReader(f)}
    return result


def clip_benchmark_run(python: Path, model: str, ckpt: Path, folder: Path, classnames: list[str],
                       runs: list[list[str]], work: Path, tag: str, workers: int) -> dict:
    (work / f"{tag}-names.json").write_text(json.dumps(classnames))
    (work / f"{tag}-runs.json").write_text(json.dumps(runs))
    out = work / f"{tag}.json"
    seconds = timed([str(python), str(ROOT / "benchmarks" / "_clip_benchmark_eval.py"), "--model", model,
                     "--checkpoint", str(ckpt), "--folder", str(folder), "--classnames", str(work / f"{tag}-names.json"),
                     "--templates", str(work / f"{tag}-runs.json"), "--out", str(out), "--workers", str(workers)])
    rec = json.loads(out.read_text())
    for run in rec["runs"]:
        run["top1"] = {p: classnames[k] for p, k in run["top1"].items()}
    return {"seconds": seconds, **rec}


def same(a: dict, b: dict) -> str:
    keys = [k for k in a if k in b]
    return f"{sum(a[k] == b[k] for k in keys)}/{len(keys)}" if len(keys) == len(a) == len(b) else "paths differ"


def prompt_accuracies(rec: dict) -> dict[str, float]:
    """template -> top-1 accuracy from a `cliplab prompts` record."""
    return {row["templates"][0]: row["metrics"]["acc1"] for row in rec["rows"] if row["kind"] == "template"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--sets", default="food101,cifar10")
    ap.add_argument("--cifar-per-class", type=int, default=100)
    ap.add_argument("--cb-workers", type=int, default=4, help="CLIP_benchmark's DataLoader workers (its default)")
    ap.add_argument("--studies", default="one,seven", help="one (a zero-shot pass), seven (the 7-template study)")
    ap.add_argument("--tag", default="", help="results file suffix and docs region name (the CPU family, e.g. zen4)")
    ap.add_argument("--docs", action="store_true", help="write the table and the agreement into docs/benchmarks.md's "
                    "region vs-clip-benchmark-TAG (one region per CPU family measured)")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    from cliplab.data import open_dataset
    from cliplab.prompts import resolve_templates

    python = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="cliplab-vs-cb-"))
    ckpt = work / f"{args.model}-random-seed0.pt"
    random_checkpoint(args.model, ckpt)
    seven = list(resolve_templates(SEVEN)[0].templates)
    rows, raw = [], {}
    for name, folder in image_sets(args.sets.split(","), args.cifar_per_class, work).items():
        ds = open_dataset(str(folder))
        names, n = list(ds.classnames), len(ds)
        print(f"{name}: {n} images, {len(names)} classes", flush=True)
        r = raw[name] = {"images": n, "folder": str(folder)}
        studies = args.studies.split(",")
        r["cb_one"] = clip_benchmark_run(python, args.model, ckpt, folder, names, [[ONE]], work, f"{name}-cb1",
                                         args.cb_workers)
        r["torch_one"] = cliplab_run("zeroshot", args.model, ckpt, folder, ONE, "torch", work, f"{name}-t1")
        r["ov_one"] = cliplab_run("zeroshot", args.model, ckpt, folder, ONE, "auto", work, f"{name}-o1")
        cb1, t1, o1 = r["cb_one"], r["torch_one"], r["ov_one"]
        auto = f"cliplab auto ({o1['record']['models'][0]['backend']})"  # what the calibration chose on this CPU
        r["auto_backend"] = o1["record"]["models"][0]["backend"]
        measured = [("one zero-shot pass", cb1["seconds"], (("cliplab torch", t1), (auto, o1)))]
        r["agreement"] = {
            "top-1 same, OpenVINO vs torch": same(o1["top1"], t1["top1"]),
            "top-1 same, torch vs CLIP_benchmark": same(t1["top1"], cb1["runs"][0]["top1"]),
            "acc1 (CLIP_benchmark, torch, OpenVINO)": (cb1["runs"][0]["metrics"]["acc1"],
                                                       t1["record"]["metrics"]["acc1"], o1["record"]["metrics"]["acc1"])}
        if "seven" in studies:
            r["cb_seven"] = clip_benchmark_run(python, args.model, ckpt, folder, names, [[t] for t in seven], work,
                                               f"{name}-cb7", args.cb_workers)
            r["torch_seven"] = cliplab_run("prompts", args.model, ckpt, folder, SEVEN, "torch", work, f"{name}-t7")
            r["ov_seven"] = cliplab_run("prompts", args.model, ckpt, folder, SEVEN, "auto", work, f"{name}-o7")
            cb_acc = [run["metrics"]["acc1"] for run in r["cb_seven"]["runs"]]
            t_acc, o_acc = prompt_accuracies(r["torch_seven"]["record"]), prompt_accuracies(r["ov_seven"]["record"])
            measured.append(("7-template study", r["cb_seven"]["seconds"],
                             (("cliplab torch", r["torch_seven"]), (auto, r["ov_seven"]))))
            r["agreement"].update({
                "7 templates acc1 equal, OpenVINO vs torch": [o_acc.get(t) == t_acc.get(t) for t in seven],
                "7 templates acc1 equal, torch vs CLIP_benchmark": [abs(t_acc.get(t, -1) - a) < 1e-9
                                                                    for t, a in zip(seven, cb_acc)]})
        for study, base, contenders in measured:
            rows.append({"images": f"{name} ({n})", "study": study, "tool": "CLIP_benchmark evaluate()",
                         "wall s": round(base, 1), "images/s": round(n / base * (7 if "7" in study else 1), 1),
                         "x CLIP_benchmark": 1.0})
            for tool, res in contenders:
                rows.append({"images": "", "study": "", "tool": tool, "wall s": round(res["seconds"], 1),
                             "images/s": "", "x CLIP_benchmark": round(base / res["seconds"], 2)})
        print(json.dumps(r["agreement"]), flush=True)
    result = {"machine": machine(), "model": args.model, "clip_benchmark": CLIP_BENCHMARK,
              "cb_workers": args.cb_workers, "openvino": md.version("openvino"), "rows": rows,
              "agreement": {k: v["agreement"] for k, v in raw.items()},
              "seconds": {k: {run: v[run]["seconds"] for run in v if isinstance(v[run], dict) and "seconds" in v[run]}
                          for k, v in raw.items()}}
    result["load_average"] = [load_before, os.getloadavg()[0]]
    head = (f"{cpu_label(result['machine']['cpu'])}, {result['machine']['cpu']['cores']} cores; load average "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; {args.model} (seeded random weights), "
            f"CLIP_benchmark {CLIP_BENCHMARK} with {args.cb_workers} DataLoader workers, OpenVINO "
            f"{result['openvino']}; one run, each tool cold in a fresh process and cache")
    table = markdown_table(rows, ["images", "study", "tool", "wall s", "images/s", "x CLIP_benchmark"])
    print(head)
    print(table)
    tag = "+".join(f"{s}x{args.cifar_per_class}" if s == "cifar10" else s for s in args.sets.split(","))
    path = save(f"vs_clip_benchmark-{args.model}-{tag}-{args.studies.replace(',', '+')}"
                + (f"-{args.tag}" if args.tag else ""), result)
    if args.docs:
        agreement = "\n".join(f"- {name}: " + "; ".join(f"{k}: {agreement_text(v)}" for k, v in a.items())
                              for name, a in result["agreement"].items())
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        cmd = "python benchmarks/vs_clip_benchmark.py " + " ".join(sys.argv[1:])
        region = write_docs_region(f"vs-clip-benchmark-{args.tag or 'cpu'}",
                                   f"{head}; `{cmd}` ({stamp}; `{path.relative_to(path.parents[2])}`).\n\n{table}"
                                   f"\n\nAgreement in the same run:\n{agreement}")
        print(f"wrote {region}")
    print(f"wrote {path}")


def agreement_text(v) -> str:
    """An agreement entry in words: (same, of) pairs as 'a/b', lists of checks as 'k of n', tuples as they are."""
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, bool) for x in v):
        return f"{sum(v)} of {len(v)}"
    if isinstance(v, (list, tuple)):
        return ", ".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
