"""Golden outputs: every command on the shapes data with the shipped tiny-shapes checkpoint, CPU, fp32.

``make_golden.py`` ran these commands once, before the architecture refactor (issue 14), and committed what they
wrote (``--output`` files and ``--results`` store rows) as JSON in this folder. ``tests/cli/test_golden.py`` runs the
same commands on the current code and compares: numbers equal to float tolerance, keys equal after the renames
documented in ``RENAMES`` (never by regenerating the files).

What is left out, and why: wall-clock figures (timings, images/s), versions, timestamps and run ids change on
every run; temporary paths are replaced by placeholders; figures (PNG/SVG/HTML) are checked to exist, not
compared byte for byte. Everything runs at one thread (torch and BLAS/OpenMP pools), so the L-BFGS and k-means
numbers are the same whatever ``OMP_NUM_THREADS`` says. ``train`` is not here: its numbers depend on the thread count (tests/train/test_training.py
covers it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

import cliplab

GOLDEN_DIR = Path(__file__).resolve().parent
# The golden files were written with the PyTorch towers, the default then; `--backend auto` (OpenVINO on the CPU) is
# the default since issue 15 and agrees with them to float rounding (tests/models/test_openvino.py), but L-BFGS
# iteration counts can move with the last bits, so the harness keeps the towers the files were written with.
COMMON = ["--device", "cpu", "--precision", "fp32", "--backend", "torch", "--quiet"]
VOLATILE_KEYS = {"timestamp", "cliplab_version", "torch", "python", "timing", "seconds", "images_per_second",
                 "run_id", "total_seconds", "image_embedding_seconds", "images_computed", "img_per_s",
                 "images/s", "computed"}
VOLATILE_METRICS = {"images_per_second"}
PATH_DEPENDENT = {"dataset_fingerprint"}  # caption sets hash their image paths, which live in a temporary folder
# Key renames between the golden files (old code) and today's outputs, per command: {old key: new key}.
# cluster's k-means implementation flag was --backend (sklearn | faiss) until --backend came to name the towers' runtime
# for every command (issue 15): it is --kmeans now, and its config key "kmeans".
RENAMES: dict[str, dict[str, str]] = {"cluster": {"backend": "kmeans"}}
# Keys that today's outputs have and the golden files lack, per command (paths as diff() prints them). Everything
# the golden file holds is still compared. Since the study contract (issue 14) every --output JSON carries the
# run's ``config`` (flags as given), which image retrieval's JSON did not; and ``models`` (name, pretrained,
# fingerprint, backend and precision of each model, since the OpenVINO backend of issue 15).
ADDITIONS: dict[str, set[str]] = {
    "similar": {"/output/config", "/output/models"}, "similar_rmac": {"/output/config", "/output/models"},
    **{name: {"/output/models"} for name in ("zeroshot", "prompts", "probe", "attack", "retrieval")}}


# The run's config (``config`` of every store row and --output record). Since issue 21 it is made from the study's
# declarations, one shape for every study and both doors (the CLI and Python record the same): each declared parameter
# by its library name, as given, with the split, device, precision and backend as resolved. The golden files hold each
# command's hand-made config of before. Keys the config has gained are not compared; every key of a golden config must
# still hold its golden value, except these documented changes (command -> {golden key: what it is now}):
CONFIG_CHANGES: dict[str, dict[str, str]] = {
    "attack": {"stroke": "a constant of the attack, not a parameter: no longer recorded",
               "templates": "as given (None: the dataset's usual set), no longer the resolved set's name"},
    "compare": {"models": "now `model` and `pretrained`: the models compared, by name",
                "datasets": "now `dataset`: the datasets compared", "split": "as resolved, one per dataset"},
    "inspect": {"classes": "as given (none given: the dataset's classes are ranked)", "prompts": "as given: ()",
                "templates": "as given (None: the dataset's usual set)"},
    "inspect_prompts": {"classes": "as given: the one comma-separated value", "prompts": "as given: ()",
                        "templates": "as given (None: simple)"},
    "probe": {"templates": "as given (None: the dataset's usual set), no longer the resolved set's name"},
    "prompts": {"baseline": "as given (None: the first template), no longer the resolved template"},
    "search": {"models": "now `model` and `pretrained`", "queries": "the queries file as given (the queries "
               "themselves are `query` and `image`)"},
    "search_image": {"models": "now `model` and `pretrained`", "queries": "the queries file as given (the image "
                     "query is `image` and `plus`)"},
    "similar": {"pooling": "now `descriptor`", "overlap": "a constant of R-MAC, not a parameter: no longer recorded"},
    "similar_rmac": {"pooling": "now `descriptor`", "overlap": "a constant of R-MAC, not a parameter: no longer "
                     "recorded"},
}


def without_changed_config(obj, changed: dict[str, str]):
    """A golden output without the config keys that changed (``CONFIG_CHANGES``)."""
    if isinstance(obj, dict):
        return {k: (without_changed_config({c: v for c, v in val.items() if c not in changed}, {}) if k == "config"
                    and isinstance(val, dict) else without_changed_config(val, changed)) for k, val in obj.items()}
    if isinstance(obj, list):
        return [without_changed_config(v, changed) for v in obj]
    return obj


def _images(work: Path) -> list[Path]:
    """Three small drawn images for inspect and image queries (the same pixels on every machine)."""
    from PIL import Image, ImageDraw

    out = []
    for name, colour, box in (("red-circle.png", (220, 30, 30), (12, 12, 52, 52)),
                              ("blue-square.png", (30, 40, 220), (10, 10, 54, 54)),
                              ("green-small.png", (30, 200, 40), (24, 24, 40, 40))):
        img = Image.new("RGB", (64, 64), (245, 245, 245))
        draw = ImageDraw.Draw(img)
        (draw.ellipse if "circle" in name else draw.rectangle)(box, fill=colour)
        p = work / "images" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        img.save(p)
        out.append(p)
    return out


def commands(work: Path) -> dict[str, dict]:
    """name -> {args, files: {label: path}, store: results folder or None}."""
    imgs = _images(work)
    w = work
    cmds = {
        "zeroshot": (["zeroshot", "--dataset", "shapes:shape", "-t", "simple", "-t", "openai-cifar",
                      "--output", w / "zeroshot.json", "--predictions", w / "zeroshot-pred.csv"],
                     {"output": "zeroshot.json", "predictions": "zeroshot-pred.csv"}),
        "prompts": (["prompts", "--dataset", "shapes:color", "-t", "simple", "-t", "openai-imagenet-7", "--select",
                     "--bootstrap", "200", "--output", w / "prompts.json"], {"output": "prompts.json"}),
        "probe": (["probe", "--dataset", "shapes:shape", "--kshot", "1,4", "--seeds", "2", "--train-limit", "1500",
                   "--output", w / "probe.json"], {"output": "probe.json"}),
        "compare": (["compare", "--model", "tiny-shapes", "--dataset", "shapes:color", "--dataset", "shapes:size",
                     "--probe", "--train-limit", "600", "--output", w / "compare.csv", "--plot", w / "compare"],
                    {"output": "compare.csv"}),
        "inspect": (["inspect", *map(str, imgs), "--dataset", "shapes:color", "--output", w / "inspect.csv",
                     "--figures", w / "inspect-figs"], {"output": "inspect.csv"}),
        "inspect_prompts": (["inspect", str(imgs[0]), "--classes", "red circle,blue square,green dot",
                             "--output", w / "inspect-classes.csv"], {"output": "inspect-classes.csv"}),
        "attack": (["attack", "typographic", "--dataset", "shapes:position", "--limit", "400",
                    "--output", w / "attack.json", "--examples", w / "attack.png"], {"output": "attack.json"}),
        "retrieval": (["retrieval", "--dataset", "shapes", "--limit", "300", "--output", w / "retrieval.json",
                       "--captions", w / "captions.csv", "--failures", w / "failures.png"],
                      {"output": "retrieval.json", "captions": "captions.csv"}),
        "search": (["search", "a red circle", "a large blue square", "--dataset", "shapes", "--topk", "5",
                    "--output", w / "search.csv", "--grids", w / "grids"], {"output": "search.csv"}),
        "search_image": (["search", "--image", str(imgs[1]), "--plus", "red", "--dataset", "shapes:color",
                          "--topk", "4", "--output", w / "search-image.csv"], {"output": "search-image.csv"}),
        "similar": (["similar", "--dataset", "shapes:color", "--output", w / "similar.json"],
                    {"output": "similar.json"}),
        "similar_rmac": (["similar", "--dataset", "shapes:color", "--descriptor", "rmac", "--pca-dim", "16",
                          "--pca-fit", "shapes:shape", "--qe", "2", "--query", str(imgs[0]), "--grid",
                          w / "similar.png", "--output", w / "similar-rmac.json"], {"output": "similar-rmac.json"}),
        "cluster": (["cluster", "--dataset", "shapes:color", "--k", "6,12", "--output", w / "cluster.csv",
                     "--grid", w / "cluster.png"], {"output": "cluster.csv"}),
        "embed": (["embed", "--dataset", "shapes:color", "--limit", "200", "--output", w / "embed.npy"],
                  {"output": "embed.npy", "ids": "embed.ids.csv"}),
    }
    out = {}
    for name, (args, files) in cmds.items():
        store = None if name == "embed" else w / f"store-{name}"
        args = [str(a) for a in args] + (["--results", str(store)] if store else [])
        out[name] = {"args": args + COMMON, "files": {k: w / v for k, v in files.items()}, "store": store}
    out["demo"] = {"args": ["demo", "--output-dir", str(w / "demo"), "--backend", "torch", "--quiet"], "files": {},
                   "store": w / "demo" / "results"}
    return out


def run(work: Path, cache: Path) -> dict[str, dict]:
    """Run every command (in-process, as the CLI runs it) and return its normalised outputs."""
    from typer.testing import CliRunner

    from cliplab.cli import app

    runner = CliRunner()
    outputs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # L-BFGS iterations and k-means differ in the last bits between thread counts
    try:
        with threadpool_limits(1):
            for name, spec in commands(work).items():
                res = runner.invoke(app, spec["args"] + ["--cache-dir", str(cache)])
                assert res.exit_code == 0, f"{name}: exit {res.exit_code}\n{res.output}\n{res.exception!r}"
                outputs[name] = normalise_run(spec, work, cache)
    finally:
        torch.set_num_threads(threads)
    return outputs


def normalise_run(spec: dict, work: Path, cache: Path) -> dict:
    out = {}
    for label, path in spec["files"].items():
        out[label] = read_output(path, work, cache)
    if spec["store"] is not None:
        out["store"] = store_rows(spec["store"], work, cache)
    return out


# The golden files were written from a checkout at /work/main: the shipped checkpoint's path (in ``pretrained``) named
# that folder. Both it and the installed package folder of the current run read as <PACKAGE>.
GOLDEN_PACKAGE_DIR = "/work/main/cliplab"
PACKAGE_DIR = str(Path(cliplab.__file__).resolve().parent)


def _clean_str(s: str, work: Path, cache: Path) -> str:
    return s.replace(str(cache), "<CACHE>").replace(str(work), "<WORK>").replace(PACKAGE_DIR, "<PACKAGE>")


def clean(obj, work: Path, cache: Path):
    """Volatile keys dropped, paths replaced by placeholders, numpy scalars as plain numbers."""
    if isinstance(obj, dict):
        return {str(k): ("<path-dependent>" if k in PATH_DEPENDENT and v else clean(v, work, cache))
                for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, (list, tuple)):
        return [clean(v, work, cache) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist(), work, cache)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, str):
        return _clean_str(obj, work, cache)
    return obj


def read_output(path: Path, work: Path, cache: Path):
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    if path.suffix == ".json":
        return clean(json.loads(path.read_text()), work, cache)
    if path.suffix == ".npy":
        arr = np.load(path)
        return {"shape": list(arr.shape), "values": arr.astype(float).round(6).tolist()}
    df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    df = df[[c for c in df.columns if c not in VOLATILE_KEYS]]
    return clean(df.to_dict(orient="list"), work, cache)


def store_rows(folder: Path, work: Path, cache: Path) -> list[dict]:
    """The store's rows, sorted, with run ids, times and versions dropped; artifacts as file names."""
    from cliplab.results.store import read_results

    df = read_results(folder)
    rows = []
    for r in df.to_dict(orient="records"):
        r = {k: v for k, v in r.items() if k not in VOLATILE_KEYS}
        r["config"] = json.loads(r["config"]) if isinstance(r.get("config"), str) else r.get("config")
        art = r.get("artifact")
        if isinstance(art, str) and art:
            assert Path(art).is_file(), art
            r["artifact"] = Path(art).name.split("-", 1)[1]  # <run id>-<file name>
        else:
            r["artifact"] = None
        if r["metric"] in VOLATILE_METRICS:
            r["value"] = None
        rows.append(clean({k: (None if isinstance(v, float) and math.isnan(v) else
                               None if v is pd.NA else v) for k, v in r.items()}, work, cache))
    key = ("command", "task", "dataset", "variant", "metric", "seed")
    return sorted(rows, key=lambda r: tuple(str(r.get(k)) for k in key))


def write(outputs: dict, folder: Path = GOLDEN_DIR) -> None:
    for name, data in outputs.items():
        (folder / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def load(name: str, folder: Path = GOLDEN_DIR) -> dict:
    return json.loads((folder / f"{name}.json").read_text().replace(GOLDEN_PACKAGE_DIR, "<PACKAGE>"))


def rename(obj, mapping: dict[str, str]):
    if not mapping:
        return obj
    if isinstance(obj, dict):
        return {mapping.get(k, k): rename(v, mapping) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rename(v, mapping) for v in obj]
    return obj


def diff(golden, now, path: str = "", rtol: float = 1e-4, atol: float = 1e-6,
         additions: set[str] = frozenset()) -> list[str]:
    """Differences between two normalised outputs: numbers to tolerance, everything else exactly; keys at the
    paths in ``additions`` may be new, and so may keys of a ``config`` (see ``CONFIG_CHANGES``)."""
    out: list[str] = []
    if isinstance(golden, dict) and isinstance(now, dict):
        for k in sorted(set(golden) | set(now)):
            if k not in now:
                out.append(f"{path}/{k}: missing now")
            elif k not in golden:
                if f"{path}/{k}" not in additions and not path.endswith("/config"):
                    out.append(f"{path}/{k}: new key (not in the golden output)")
            else:
                out += diff(golden[k], now[k], f"{path}/{k}", rtol, atol, additions)
    elif isinstance(golden, list) and isinstance(now, list):
        if len(golden) != len(now):
            out.append(f"{path}: {len(golden)} items in the golden output, {len(now)} now")
        else:
            for i, (g, n) in enumerate(zip(golden, now)):
                out += diff(g, n, f"{path}[{i}]", rtol, atol, additions)
    elif isinstance(golden, bool) or isinstance(now, bool):
        if golden != now:
            out.append(f"{path}: {golden!r} != {now!r}")
    elif isinstance(golden, (int, float)) and isinstance(now, (int, float)):
        both_nan = math.isnan(golden) and math.isnan(now)
        if not both_nan and not math.isclose(golden, now, rel_tol=rtol, abs_tol=atol):
            out.append(f"{path}: {golden!r} != {now!r}")
    elif golden != now:
        out.append(f"{path}: {golden!r} != {now!r}")
    return out
