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

import contextlib
import json
import math
import re
from pathlib import Path
from typing import NamedTuple

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
# What a command's output has gained since its golden file was made, documented (path -> why). A path is a key of an
# output, a column of a ranked table, or ``/store/<variant>``: the store rows of a new variant. Nothing else may be new.
WHY_FAILURES = ("caption retrieval's failure analysis (issue 25, commit 05cdb4e): per caption the images above its own, "
                "the score gap, the nearest image above it and the near-duplicates among them; the store's "
                "'text_to_image failures' rows summarise them (median images above, median gap, near-duplicate share)")
WHY_FACTS = ("model facts (issue 27): each compared row names its model's image backbone with its patch size, its "
             "input resolution and the pretraining data its weights' metadata records (cliplab/models/facts.py)")
WHY_CAPTION_ID = ("chosen captions (issue 27): each caption's id, its number among the dataset's captions in file order, "
                  "by which --show-captions picks it (stable when an image cannot be read)")
WHY_METRIC = ("distances other than cosine (issue 27): each search hit says which score it is (cosine, dot, or "
              "euclidean: an L2 distance), so a hits file read on its own cannot be taken for cosines")
DOCUMENTED_ADDITIONS: dict[str, dict[str, str]] = {
    "search": {"/output/metric": WHY_METRIC}, "search_image": {"/output/metric": WHY_METRIC},
    "compare": {"/output/backbone": WHY_FACTS, "/output/pretraining_data": WHY_FACTS, "/output/resolution": WHY_FACTS},
    "retrieval": {"/captions/images_above": WHY_FAILURES, "/captions/score_gap": WHY_FAILURES,
                  "/captions/nearest_above": WHY_FAILURES, "/captions/near_duplicates_above": WHY_FAILURES,
                  "/store/text_to_image failures": WHY_FAILURES, "/captions/caption_id": WHY_CAPTION_ID},
    "demo": {"/store/text_to_image failures": WHY_FAILURES},
}
for _name, _paths in DOCUMENTED_ADDITIONS.items():
    ADDITIONS[_name] = ADDITIONS.get(_name, set()) | set(_paths)


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
    "prompts": {"baseline": "as given (None: the first template), no longer the resolved template",
                "descriptions": "repeatable since issue 27 (several files, or files of named sets): as given, () "
                "when none"},
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


def run(work: Path, cache: Path, threads: int = 1, noise: float = 0.0, names=None) -> dict[str, dict]:
    """Run every command (in-process, as the CLI runs it; only ``names`` if given) and return its normalised
    outputs. ``threads``: torch and BLAS threads (the golden files were written at 1); ``noise``: every embedding
    the towers compute gets a seeded random error of this norm relative to its own (a stand-in for another CPU's
    rounding: 1e-6 is the measured float32-vs-float64 error of the towers)."""
    from typer.testing import CliRunner

    from cliplab.cli import app

    runner = CliRunner()
    outputs = {}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads), _perturbed_towers(noise):
            for name, spec in commands(work).items():
                if names is not None and name not in names:
                    continue
                res = runner.invoke(app, spec["args"] + ["--cache-dir", str(cache)])
                assert res.exit_code == 0, f"{name}: exit {res.exit_code}\n{res.output}\n{res.exception!r}"
                outputs[name] = normalise_run(spec, work, cache)
    finally:
        torch.set_num_threads(before)
    return outputs


def another_cpu_env() -> dict[str, str]:
    """Environment variables that make this machine compute like another CPU: the next-older vector kernels in
    PyTorch's own ops, MKL, oneDNN and OpenBLAS (AVX2 where AVX-512 is, AVX / SSE4 where AVX2 is; nothing elsewhere)."""
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    except (OSError, AttributeError):
        return {}
    if "avx512f" in flags:
        return {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                "OPENBLAS_CORETYPE": "Haswell"}
    if "avx2" in flags:
        return {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "OPENBLAS_CORETYPE": "Sandybridge"}
    return {}


@contextlib.contextmanager
def _perturbed_towers(noise: float, seed: int = 0):
    """Inside: LoadedModel.encode_images / encode_texts add a seeded error of relative norm ``noise`` per row."""
    if not noise:
        yield
        return
    from cliplab.models.base import LoadedModel

    gen = torch.Generator().manual_seed(seed)
    originals = {name: getattr(LoadedModel, name) for name in ("encode_images", "encode_texts")}

    def perturbed(fn):
        def encode(self, *args, **kwargs):
            out = fn(self, *args, **kwargs)
            err = torch.randn(out.shape, generator=gen, dtype=torch.float64)
            err *= noise * out.double().norm(dim=-1, keepdim=True) / err.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            return (out.double() + err).to(out.dtype)
        return encode

    for name, fn in originals.items():
        setattr(LoadedModel, name, perturbed(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(LoadedModel, name, fn)


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

    # read_results gives the tidy frame (issue 24: recall[cat] as metric 'recall', class 'cat'); the files still hold
    # the packed name, which the golden rows were written with: it is compared as it is stored (metric_name)
    df = read_results(folder)
    df = df.assign(metric=df.metric_name).drop(columns=["class", "true", "predicted", "metric_name"])
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


# ---- What is compared, and how -------------------------------------------------------------------------------------
# A golden file was written on one machine (AMD EPYC, AVX-512, MKL / OpenBLAS). Another CPU or BLAS (a Xeon with AMX,
# OMP_NUM_THREADS=2, AVX2 kernels) sums in another order, so every float differs in its last bits, and what follows
# from those bits differs too: an L-BFGS run stops a few iterations earlier or later, and an item whose decision was a
# near-tie (two classes, two captions within rounding of each other) can fall the other way. The comparison below
# admits exactly that and nothing more; each number is compared by what it is (its key, or a store row's metric):
#
# * solver internals are not outputs and are not compared: ``iterations`` / ``sweep_iterations`` (74 vs 77, 290 vs
#   260 on a Xeon) and ``max_abs_gradient`` (the gradient left when the solver stopped: below the tolerance ``tol``,
#   which is compared, but otherwise rounding noise). ``converged`` is compared: not converging is a real change.
# * embedding values (``embed``'s array): |now - golden| <= ROUNDING + EMBED_NOISE * |golden row|, an absolute
#   tolerance scaled to the vector's norm (a relative tolerance per value fails near zero: 0.000238 vs 0.000237).
#   The float32 towers are within 1.1e-6 * |row| of a float64 forward pass (measured: tiny-shapes, 200 shapes images;
#   text rows 2.8e-7), so two float32 implementations are within 2.2e-6 * |row|; EMBED_NOISE is 4.5 times that.
#   ROUNDING: the values are stored rounded to 6 decimals.
# * similarity scores (cosines, and their means / percentiles / maxima): |now - golden| <= SCORE_ATOL, in cosine
#   units (measured: 6.2e-7 between float32 and float64 towers, so 1.2e-6 between two float32 machines).
#   Probabilities (softmax of logit_scale * cosine, logit_scale <= 100): |now - golden| <= PROB_RTOL * golden, the
#   relative change a score change of SCORE_ATOL on both sides makes.
# * count metrics -- a fraction of n items, each decided by a score comparison (accuracy, recall@k, P@k, per-class
#   recall, train / validation accuracy of a probe, the attack's rates, mAP, mean rank) and what is computed from one
#   (mean and std over seeds, the difference of two accuracies on the same images): they may differ by at most what
#   ONE item changing its decision moves them (``one_item``): 1/n for a fraction of n items; 1/(k n) for P@k; 1/n for
#   mAP and mean rank (a swap of two neighbours moves one query's AP by at most 1/R <= 1, one rank by 1); 1/n for the
#   mean over s seeds and for the sample std over s >= 2 seeds (it is 1-Lipschitz in the values / sqrt(s - 1));
#   1 for a median rank and for counts (confusion cells, only-this-correct); 1/n_c for the recall of a class of n_c
#   items and 1/(C n_c) for the mean over C classes, with n_c >= n / (2C) (every class of the golden datasets has at
#   least half its balanced share: checked against the golden confusion matrices by tests/cli/test_golden.py).
#   Why one item: an item changes its decision only if its golden margin was below the score noise (~1e-6); margins
#   near zero are rare (the per-item tables below show how rare: on the AVX2-kernel run of test_golden.py at most one
#   item moved per metric), and two within 1e-6 in one metric of <= 10,000 items would be a coincidence, unless they
#   are exact ties -- which the tasks resolve by identity, not by rounding (duplicate captions in caption retrieval).
#   A change of two items is reported. Values computed from counts that cannot be bounded by one item (McNemar's p,
#   bootstrap CI bounds) are compared at RTOL unless a count of their own row (store) or dict (output) moved.
# * per-item ranked tables (zeroshot ``--predictions``, retrieval ``--captions``, search and inspect outputs) hold
#   each item's scores, so their near-ties are known: scores are compared position by position (the k-th largest
#   score moves by at most the noise), and an item may change places only where the golden scores at that place were
#   within TIE of a neighbour (or at the list's last place, tied with the item the list does not show). A per-item
#   flag or rank that follows from the order (``correct``; a caption's ``rank``) may change only where the golden run
#   had such a near-tie (a ``rank`` beyond the listed top-k: by one).
# * everything else (chosen hyperparameters, k-means inertia, NMI, p-values, sizes, ids): relative tolerance RTOL and
#   no absolute tolerance -- an absolute 1e-6 hid the k-shot weight decay moving from 1e-6 to 1e-7. Strings exactly.
EMBED_NOISE = 1e-5
ROUNDING = 1e-6
SCORE_ATOL = 1e-5
TIE = 2 * SCORE_ATOL  # two scores that each move by SCORE_ATOL can swap when they were this close
PROB_RTOL = 2 * 100 * SCORE_ATOL
RTOL = 1e-4
NOT_OUTPUTS = frozenset({"iterations", "sweep_iterations", "max_abs_gradient"})

# Known changes since the golden files were written (command -> [Change]): the golden value at a path (an --output
# path as diff() prints it, or a store row named by its variant, metric and seed) is replaced by the new one before
# the comparison, after checking that the golden file holds the old one. The new value is then compared like any other.
WHY_KSHOT = ("the k-shot solver was replaced (Newton in the span of the shots, merge 3718a08): it now reaches "
             "scikit-learn's exact optimum, where L-BFGS stopped at its tolerance; docs/benchmarks.md, k-shot probes")
WHY_TIES = ("caption retrieval: a caption with the same text as one of the image's own ties with it and counts for the "
            "model, as the rank convention says (commit d0232bf); the golden runs ranked such images below the copy by "
            "rounding (4 of 300 in retrieval, 24 of 1000 in the demo)")


class Change(NamedTuple):
    where: str | tuple  # an --output path, or a store row (variant, metric, seed)
    old: object
    new: object
    why: str


KNOWN_CHANGES: dict[str, list[Change]] = {
    "probe": [
        Change("/output/kshot[1]/acc1[0]", 0.247, 0.249, WHY_KSHOT),
        Change("/output/kshot[1]/mean", 0.2815, 0.2825, WHY_KSHOT),
        Change("/output/kshot[1]/std", 0.04879036790187179, 0.04737615433949868, WHY_KSHOT),
        Change("/output/kshot[3]/acc1[0]", 0.356, 0.357, WHY_KSHOT),
        Change("/output/kshot[3]/weight_decay[0]", 1e-06, 1e-07, WHY_KSHOT),
        Change("/output/kshot[3]/mean", 0.353, 0.3535, WHY_KSHOT),
        Change("/output/kshot[3]/std", 0.004242640687119289, 0.004949747468305837, WHY_KSHOT),
        Change(("probe k=1", "acc1", 0), 0.247, 0.249, WHY_KSHOT),
        Change(("probe k=1", "acc1_mean", None), 0.2815, 0.2825, WHY_KSHOT),
        Change(("probe k=1", "acc1_std", None), 0.04879036790187179, 0.04737615433949868, WHY_KSHOT),
        Change(("probe k=4", "acc1", 0), 0.356, 0.357, WHY_KSHOT),
        Change(("probe k=4", "acc1_mean", None), 0.353, 0.3535, WHY_KSHOT),
        Change(("probe k=4", "acc1_std", None), 0.004242640687119289, 0.004949747468305837, WHY_KSHOT),
    ],
    "demo": [
        Change(("probe k=4", "acc1", 1), 0.391, 0.383, WHY_KSHOT),
        Change(("probe k=4", "acc1_mean", None), 0.3463333333333334, 0.34366666666666673, WHY_KSHOT),
        Change(("probe k=4", "acc1_std", None), 0.05422484055608956, 0.05103266927501769, WHY_KSHOT),
        Change(("image_to_text", "recall@1", None), 0.444, 0.468, WHY_TIES),  # 24 of 1000 images
        Change(("image_to_text", "recall@5", None), 0.943, 0.944, WHY_TIES),
        Change(("image_to_text", "recall@10", None), 0.984, 0.985, WHY_TIES),
        Change(("image_to_text", "mean_rank", None), 2.338, 2.278, WHY_TIES),
    ],
    "retrieval": [
        Change("/output/metrics/image_to_text_recall@1", 0.78, 0.7933333333333333, WHY_TIES),  # 4 of 300 images
        Change("/output/metrics/image_to_text_mean_rank", 1.3666666666666667, 1.35, WHY_TIES),
        Change(("image_to_text", "recall@1", None), 0.78, 0.7933333333333333, WHY_TIES),
        Change(("image_to_text", "mean_rank", None), 1.3666666666666667, 1.35, WHY_TIES),
    ],
}


# Store rows renamed or no longer written (command -> [StoreChange]): every golden row of ``task`` with variant
# ``old`` gets variant ``new`` (None: the rows are dropped) before the comparison, after checking that there are such rows.
WHY_ONE_NAME = ("issue 24: a number is stored under one name. A probe's zero-shot rows are named as a zero-shot run "
                "names them (task zeroshot_classification, variant = the template set's name: 'simple', not "
                "'zero-shot (simple)'), and the k-shot row 'zero-shot k=0' (the same top-1 again) is no longer stored: "
                "the k-shot figure draws the run's zeroshot_classification top-1 (the --output JSON keeps its k=0 entry)")


class StoreChange(NamedTuple):
    task: str
    old: str  # the golden rows' variant
    new: str | None  # their variant now; None: no longer stored
    why: str


_ONE_NAME = [StoreChange("zeroshot_classification", "zero-shot (simple)", "simple", WHY_ONE_NAME),
             StoreChange("kshot_probe", "zero-shot k=0", None, WHY_ONE_NAME)]
STORE_CHANGES: dict[str, list[StoreChange]] = {"probe": _ONE_NAME, "demo": _ONE_NAME}


def with_known_changes(name: str, golden: dict) -> dict:
    """The golden output of ``name`` with its ``STORE_CHANGES`` and ``KNOWN_CHANGES`` applied (a copy); raises if one
    no longer holds."""
    golden = json.loads(json.dumps(golden))
    for change in STORE_CHANGES.get(name, []):
        hit = [r for r in golden["store"] if (r["task"], r["variant"]) == (change.task, change.old)]
        assert hit, f"{name}: no golden store row is {change.task} / {change.old}"
        if change.new is None:
            golden["store"] = [r for r in golden["store"] if not any(r is h for h in hit)]
        for r in hit:
            r["variant"] = change.new
    for change in KNOWN_CHANGES.get(name, []):
        if isinstance(change.where, tuple):
            variant, metric, seed = change.where
            rows = [r for r in golden["store"] if (r["variant"], r["metric"], r["seed"]) == change.where]
            assert len(rows) == 1, f"{name}: {len(rows)} store rows are {variant} / {metric} / seed {seed}"
            holder, key = rows[0], "value"
        else:
            *parents, last = _steps(change.where)
            holder = golden
            for step in parents:
                holder = holder[step]
            key = last
        assert holder[key] == change.old, f"{name} {change.where}: golden holds {holder[key]!r}, not {change.old!r}"
        holder[key] = change.new
    return golden


def _steps(path: str) -> list:
    """'/output/kshot[1]/acc1[0]' -> ['output', 'kshot', 1, 'acc1', 0]."""
    return [int(s) if s.isdigit() else s for s in re.findall(r"[^/\[\]]+", path)]


# The per-item ranked tables (command -> {path: layout}); see the comment above.
class Ranked(NamedTuple):
    item: str  # a column, or a pattern with {k}: top{k}_label
    score: str
    group: str | None = None  # long tables: the column whose runs are one ranked list (rows in rank order)
    rank: str | None = None  # wide tables: the true item's rank (a caption's own image)
    flag: str | None = None  # wide tables: whether the first item is the true one
    prob: str | None = None  # long tables: a probability per row
    complete: bool = False  # every candidate is listed (no unseen item after the last place)


RANKED: dict[str, dict[str, Ranked]] = {
    "zeroshot": {"/predictions": Ranked("top{k}_label", "top{k}_score", flag="correct")},
    "retrieval": {"/captions": Ranked("top{k}_image", "top{k}_score", rank="rank")},
    "search": {"/output": Ranked("image", "score", group="query")},
    "search_image": {"/output": Ranked("image", "score", group="query")},
    "inspect": {"/output": Ranked("candidate", "cosine", group="image", prob="probability", complete=True)},
    "inspect_prompts": {"/output": Ranked("candidate", "cosine", group="image", prob="probability", complete=True)},
}
EMBEDDINGS: dict[str, str] = {"embed": "/output/values"}

# Where the n of an --output file's count metric is (command -> [(path pattern, path of n | n)], first match); the
# store rows carry their own n.
OUTPUT_N: dict[str, list[tuple[str, str | int]]] = {
    "attack": [(r"/output/metrics/", "/output/metrics/n")],
    "compare": [(r"/output/probe_train_acc1\[\d+\]", 600),  # --train-limit 600
                (r"/output/\w+\[(\d+)\]", "/output/images[{0}]")],
    "probe": [(r"/sweep/points\[\d+\]/train_acc1", "/output/linear_probe/sweep/n_train"),
              (r"/sweep/points\[\d+\]/val_acc1|/val_curve\[", "/output/linear_probe/n_val"),
              (r"/linear_probe/train/", "/output/num_train"), (r"/output/", "/output/num_test")],
    "prompts": [(r"/output/selection/val_accuracy", "/output/selection/val_images"), (r"/output/", "/output/num_images")],
    "retrieval": [(r"/image_to_text_", "/output/metrics/num_images"), (r"/text_to_image_", "/output/metrics/num_captions")],
    "similar": [(r"/output/metrics/", "/output/metrics/queries")],
    "similar_rmac": [(r"/output/metrics/", "/output/metrics/queries")],
    "zeroshot": [(r"/output/", "/output/num_images")],
}

# Kinds of numbers, by name (a store row's metric; an --output key, named as the store names it by _metric_name).
_KINDS = [
    (r"recall\[.*\]", "class"), (r"(\w+_)?mean_per_class_recall", "class_mean"),
    (r"confusion\[.*\]|only_\w+_correct", "count"), (r"median_rank", "unit"), (r"mcnemar_p|ci95|significant", "follows"),
    (r"P@\d+|acc[15]|acc1_(mean|std|diff_vs_baseline|drop)|(attacked|clean)_acc1|correct_flipped_to_written|"
     r"prediction_changed|predicts_written_label(_clean)?|recall@\d+|mean_rank|mAP(@\d+)?|purity|"
     r"(sweep_)?(train|val)_acc1", "fraction"),
    (r"top\d+_score|true_score|score|cosine|top1_cosine|mean_top\d+_score|all_scores_\w+|mean_correct_similarity",
     "score"),
    (r"probability|top1_probability", "probability"),
]


def kind_of(name: str) -> str:
    """What a number named ``name`` is: not_output, class, class_mean, count, unit, follows, fraction, score,
    probability or other."""
    if name in NOT_OUTPUTS:
        return "not_output"
    return next((kind for pattern, kind in _KINDS if re.fullmatch(pattern, name)), "other")


def _metric_name(path: str) -> str:
    """An --output number's name as the store names the metric: /output/kshot[1]/mean -> acc1_mean."""
    plain = re.sub(r"\[\d+\]", "", path)
    parts = plain.rstrip("/").split("/")
    last, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if parent == "per_class_recall":
        return f"recall[{last}]"
    if parent == "kshot" and last in ("mean", "std"):
        return f"acc1_{last}"
    if parent == "vs_baseline" and last == "diff":
        return "acc1_diff_vs_baseline"
    if last == "val_curve":  # [weight decay, validation accuracy] pairs
        return "val_acc1" if path.endswith("[1]") else "weight_decay"
    if last == "confusion":
        return "confusion[]"
    last = re.sub(r"^(image_to_text|text_to_image)_", "", last)
    return {"probe_acc1": "acc1", "probe_train_acc1": "train_acc1", "test_accuracy": "acc1",
            "val_accuracy": "val_acc1"}.get(last, last)


def one_item(name: str, n: float | None, classes: int | None = None) -> float | None:
    """How much one item changing its decision moves a count metric of ``n`` items (None: unknown)."""
    kind = kind_of(name)
    if kind in ("count", "unit"):
        return 1.0
    if not n:
        return None
    if kind == "class":
        return 2.0 * (classes or 1) / n  # 1 / n_c with n_c >= n / (2C)
    if kind == "class_mean":
        return 2.0 / n  # 1 / (C n_c)
    k = re.fullmatch(r"P@(\d+)", name)
    return 1.0 / (n * int(k.group(1))) if k else 1.0 / n


def _close(golden, now, tol: float) -> bool:
    if isinstance(golden, float) and isinstance(now, float) and math.isnan(golden) and math.isnan(now):
        return True
    return abs(now - golden) <= tol


def _number(name: str, golden, now, path: str, n=None, classes=None) -> tuple[str | None, bool]:
    """(a difference, or None; whether a count moved within its one-item allowance)."""
    kind = kind_of(name)
    if kind == "not_output":
        return None, False
    if kind == "score":
        ok = _close(golden, now, SCORE_ATOL)
    elif kind == "probability":
        ok = _close(golden, now, PROB_RTOL * abs(golden))
    elif kind in ("fraction", "class", "class_mean", "count", "unit"):
        if _close(golden, now, 1e-12 * max(1.0, abs(golden))):
            return None, False
        step = one_item(name, n, classes)
        if step is None:
            return f"{path}: {golden!r} != {now!r} (a count metric whose n is unknown: add it to OUTPUT_N)", False
        if _close(golden, now, step * (1 + 1e-9)):
            return None, True
        return f"{path}: {golden!r} != {now!r} (more than one item: {abs(now - golden) / step:.3g} x {step:.3g})", False
    else:
        ok = (isinstance(golden, float) and isinstance(now, float) and math.isnan(golden) and math.isnan(now)) or \
            math.isclose(golden, now, rel_tol=RTOL, abs_tol=0.0)
    return (None if ok else f"{path}: {golden!r} != {now!r}"), False


class _Diff:
    """One comparison of a golden output with today's (see diff())."""

    def __init__(self, command: str | None, golden_root, now_root, additions):
        self.command, self.golden_root, self.now_root, self.additions = command, golden_root, now_root, additions
        self.ranked = RANKED.get(command, {})
        self.embeddings = EMBEDDINGS.get(command)

    def run(self, golden, now, path: str = "") -> list[str]:
        if path in self.ranked and isinstance(golden, dict) and isinstance(now, dict):
            return self.ranked_table(golden, now, path, self.ranked[path])
        if path == self.embeddings and isinstance(golden, list) and isinstance(now, list):
            return self.embedding_rows(golden, now, path)
        if path == "/store" and isinstance(golden, list) and isinstance(now, list):
            return self.store(golden, now)
        if isinstance(golden, dict) and isinstance(now, dict):
            return self.mapping(golden, now, path)
        if isinstance(golden, list) and isinstance(now, list):
            if len(golden) != len(now):
                return [f"{path}: {len(golden)} items in the golden output, {len(now)} now"]
            out: list[str] = []
            for i, (g, n) in enumerate(zip(golden, now)):
                out += self.run(g, n, f"{path}[{i}]")
            return out
        return self.leaf(golden, now, path)[0]

    def mapping(self, golden: dict, now: dict, path: str) -> list[str]:
        out, moved, follows = [], False, []
        for k in sorted(set(golden) | set(now)):
            sub = f"{path}/{k}"
            if k not in now:
                out.append(f"{sub}: missing now")
            elif k not in golden:
                if sub not in self.additions and not path.endswith("/config"):
                    out.append(f"{sub}: new key (not in the golden output)")
            elif kind_of(_metric_name(sub)) == "follows":
                follows.append(k)
            elif _is_number(golden[k]) and _is_number(now[k]):
                problems, m = self.leaf(golden[k], now[k], sub)
                out += problems
                moved = moved or m
            else:
                out += self.run(golden[k], now[k], sub)
        for k in follows:  # computed from this dict's counts: compared only when none of them moved
            if not moved:
                out += self.run(golden[k], now[k], f"{path}/{k}")
        return out

    def leaf(self, golden, now, path: str) -> tuple[list[str], bool]:
        if _is_number(golden) and _is_number(now):
            problem, moved = _number(_metric_name(path), golden, now, path, self.output_n(path), self.classes(path))
            return ([problem] if problem else []), moved
        return ([] if golden == now else [f"{path}: {golden!r} != {now!r}"]), False

    def output_n(self, path: str):
        for pattern, where in OUTPUT_N.get(self.command, []):
            found = re.search(pattern, path)
            if found:
                if isinstance(where, int):
                    return where
                return _get(self.golden_root, where.format(*found.groups()))
        return None

    def classes(self, path: str):
        if "/per_class_recall/" in path:
            parent = _get(self.golden_root, path.rsplit("/", 1)[0])
            return len(parent) if isinstance(parent, dict) else None
        return None

    def embedding_rows(self, golden: list, now: list, path: str) -> list[str]:
        g, n = np.asarray(golden, dtype=float), np.asarray(now, dtype=float)
        if g.shape != n.shape:
            return [f"{path}: shape {g.shape} in the golden output, {n.shape} now"]
        tol = ROUNDING + EMBED_NOISE * np.linalg.norm(g, axis=1, keepdims=True)
        bad = np.argwhere(np.abs(n - g) > tol)
        return [f"{path}[{i}][{j}]: {g[i, j]!r} != {n[i, j]!r} (more than {tol[i, 0]:.2g}: {EMBED_NOISE:g} x the "
                f"row's norm + the rounding)" for i, j in bad[:30]]

    def store(self, golden: list, now: list) -> list[str]:
        """Rows paired by what they are (not their place), values by their metric."""
        def key(r):
            return tuple(str(r.get(k)) for k in ("command", "task", "model", "dataset", "split", "variant", "metric",
                                                "seed"))

        def label(r):
            return f"/store[{r.get('dataset')} | {r.get('variant')} | {r.get('metric')}" + (
                f" | seed {r['seed']}]" if r.get("seed") is not None else "]")

        g_rows, n_rows = {key(r): r for r in golden}, {key(r): r for r in now}
        if len(g_rows) != len(golden) or len(n_rows) != len(now):  # not unique: pair by place
            return self.run(golden, now, "/store[]")
        out = [f"{label(g_rows[k])}: missing now" for k in g_rows if k not in n_rows]
        out += [f"{label(n_rows[k])}: new row (not in the golden output)" for k in n_rows if k not in g_rows
                and f"/store/{n_rows[k].get('variant')}" not in self.additions]
        groups: dict[tuple, list] = {}
        for k in g_rows:
            if k in n_rows:
                groups.setdefault(k[:6], []).append(k)
        for members in groups.values():
            moved, follows = False, []
            for k in members:
                g, n = g_rows[k], n_rows[k]
                out += self.run({f: v for f, v in g.items() if f != "value"},
                                {f: v for f, v in n.items() if f != "value"}, label(g))
                if kind_of(g["metric"]) == "follows":
                    follows.append(k)
                    continue
                problem, m = self.row_value(g, n, golden, members, g_rows, label(g))
                out += [problem] if problem else []
                moved = moved or m
            for k in follows:
                if not moved:
                    out += [p for p in [self.row_value(g_rows[k], n_rows[k], golden, members, g_rows,
                                                       label(g_rows[k]))[0]] if p]
        return out

    def row_value(self, g: dict, n: dict, rows: list, members: list, g_rows: dict, label: str):
        gv, nv = g.get("value"), n.get("value")
        if not (_is_number(gv) and _is_number(nv)):
            return (None if gv == nv else f"{label}/value: {gv!r} != {nv!r}"), False
        metric, count = g["metric"], g.get("n")
        if metric == "train_acc1":  # the row's n is the test set's; the probe was fit on the sweep's train + val
            sweep = {r["metric"]: r["n"] for r in rows if r.get("dataset") == g.get("dataset") and
                     r.get("command") == g.get("command") and str(r.get("variant", "")).startswith("linear probe ·")}
            count = sweep.get("sweep_train_acc1", 0) + sweep.get("sweep_val_acc1", 0) or None
        classes = sum(1 for k in members if re.fullmatch(r"recall\[.*\]", g_rows[k]["metric"]))
        return _number(metric, gv, nv, f"{label}/value", count, classes or None)

    def ranked_table(self, golden: dict, now: dict, path: str, spec: Ranked) -> list[str]:
        """A table of ranked lists, one per row (wide: top1_x, top2_x, ...) or per run of rows (long)."""
        out = [f"{path}/{k}: missing now" for k in golden if k not in now]
        out += [f"{path}/{k}: new column" for k in now if k not in golden and f"{path}/{k}" not in self.additions]
        lengths = {len(v) for v in (*golden.values(), *now.values())}
        if len(lengths) > 1:
            return out + [f"{path}: {sorted(lengths)} rows (golden and now differ)"]
        if spec.group is None:
            k_max = max(int(m.group(1)) for c in golden for m in [re.fullmatch(spec.score.format(k=r"(\d+)"), c)] if m)
            items = [spec.item.format(k=k) for k in range(1, k_max + 1)]
            scores = [spec.score.format(k=k) for k in range(1, k_max + 1)]
            lists = [(f"{path}[row {i}]", [i] * k_max, items, scores) for i in range(len(golden[scores[0]]))]
        else:
            runs: dict[str, list[int]] = {}
            for i, g in enumerate(golden[spec.group]):
                runs.setdefault(str(g), []).append(i)
            lists = [(f"{path}[{spec.group} {g!r}]", rows, [spec.item] * len(rows), [spec.score] * len(rows))
                     for g, rows in runs.items()]
        handled = {spec.item, spec.score, spec.rank, spec.flag, spec.prob}
        for _, _, item_cols, score_cols in lists:
            handled.update(item_cols, score_cols)
        for where, rows, item_cols, score_cols in lists:
            gi = [golden[c][r] for c, r in zip(item_cols, rows)]
            ni = [now[c][r] for c, r in zip(item_cols, rows) if c in now]
            gs = [golden[c][r] for c, r in zip(score_cols, rows)]
            ns = [now[c][r] for c, r in zip(score_cols, rows) if c in now]
            if len(ni) != len(gi) or len(ns) != len(gs):
                continue  # a missing column, reported above
            tied = [any(abs(gs[p] - gs[q]) <= TIE for q in (p - 1, p + 1) if 0 <= q < len(gs)) for p in range(len(gs))]
            for p in range(len(gs)):
                if not _close(gs[p], ns[p], SCORE_ATOL):
                    out.append(f"{where} place {p + 1}: score {gs[p]!r} != {ns[p]!r}")
                edge = p == len(gs) - 1 and not spec.complete and ni[p] not in gi
                if gi[p] != ni[p] and not tied[p] and not edge:
                    out.append(f"{where} place {p + 1}: {gi[p]!r} != {ni[p]!r} (no near-tie there in the golden run)")
                if spec.prob and spec.prob in now:
                    r = rows[p]
                    if not _close(golden[spec.prob][r], now[spec.prob][r], PROB_RTOL * abs(golden[spec.prob][r])):
                        out.append(f"{where} place {p + 1}: {spec.prob} {golden[spec.prob][r]!r} != "
                                   f"{now[spec.prob][r]!r}")
            r = rows[0]
            if spec.flag and spec.flag in now and golden[spec.flag][r] != now[spec.flag][r] and not tied[0]:
                out.append(f"{where}: {spec.flag} {golden[spec.flag][r]!r} != {now[spec.flag][r]!r} (no near-tie at "
                           "the top in the golden run)")
            if spec.rank and spec.rank in now and golden[spec.rank][r] != now[spec.rank][r]:
                g_rank = int(golden[spec.rank][r])
                if g_rank <= len(gs):
                    allowed = sum(abs(gs[q] - gs[g_rank - 1]) <= TIE for q in range(len(gs)) if q != g_rank - 1)
                    allowed += g_rank == len(gs)  # tied with the item the list does not show
                else:
                    allowed = 1  # the own item's score is not in the table: one item, as for the metrics
                if abs(int(now[spec.rank][r]) - g_rank) > allowed:
                    out.append(f"{where}: {spec.rank} {g_rank} != {now[spec.rank][r]} (allowed: {allowed} near-tied "
                               "places)")
        for col in sorted(set(golden) & set(now) - handled):  # ids, true labels and scores, captions, ...
            out += self.run(golden[col], now[col], f"{path}/{col}")
        return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _get(root, path: str):
    node = root
    for step in _steps(path):
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def diff(golden, now, path: str = "", additions: set[str] = frozenset(), command: str | None = None) -> list[str]:
    """Differences between two normalised outputs of ``command`` (the golden file's name): each number compared by
    what it is (see the comment above ``EMBED_NOISE``), everything else exactly; keys at the paths in ``additions`` may
    be new, and so may keys of a ``config`` (see ``CONFIG_CHANGES``)."""
    return _Diff(command, golden, now, additions).run(golden, now, path)
