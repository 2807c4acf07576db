"""Compute every tiny-shapes figure the README quotes and rewrite the README's marked regions (`make docs-numbers`).

Each figure comes from the ``cliplab`` command the README shows, run on the shipped ``tiny-shapes`` checkpoint
(fp16-stored weights loaded into an fp32 model) in a fresh temporary cache, with one CPU thread. The README regions are delimited by
``<!-- numbers:NAME -->`` ... ``<!-- /numbers:NAME -->``; text outside them is never touched.

    python benchmarks/docs_numbers.py            # rewrite README.md
    python benchmarks/docs_numbers.py --check    # exit 1 if README.md differs from what the code gives
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

# One thread for every library: a few figures (the 1-shot probe, training accuracy) move with the thread count's
# float reduction order, and README figures must not depend on the machine's OMP_NUM_THREADS.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
ATTRS = [("shape", "shape"), ("color", "colour"), ("size", "size"), ("position", "position"),
         ("background", "background")]


def cli(*args: str) -> str:
    from typer.testing import CliRunner

    from cliplab.cli import app

    res = CliRunner().invoke(app, list(args))
    if res.exit_code != 0:
        raise SystemExit(f"cliplab {' '.join(args)} failed ({res.exit_code}):\n{res.output}")
    return res.output


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def signed(x: float) -> str:
    return f"{x:.1f}".replace("-", "−")


def compute(cache: Path, work: Path) -> dict[str, str]:
    from cliplab.data.shapes import ATTRIBUTE_VALUES
    from cliplab.models.local import shipped_model

    c = ["--cache-dir", str(cache), "-q"]
    regions: dict[str, str] = {}
    lm = shipped_model("tiny-shapes")
    meta = lm.meta

    # zero-shot table (the oracle section)
    acc = {}
    for attr, _ in ATTRS:
        cli("zeroshot", "-d", f"shapes:{attr}", "-t", "simple", "-o", str(work / f"zs-{attr}.json"), *c)
        acc[attr] = json.loads((work / f"zs-{attr}.json").read_text())["metrics"]["acc1"]
    rows = ["| attribute | classes | chance | top-1 |", "|---|---|---|---|"]
    for attr, label in ATTRS:
        n = len(ATTRIBUTE_VALUES[attr])
        rows.append(f"| {label} | {n} | {pct(1 / n)} % | {pct(acc[attr])} % |")
    regions["zeroshot-table"] = "\n".join(rows)
    cfg = meta.get("config", {})
    regions["training"] = (
        f"trained by `cliplab train` with open_clip's `ClipLoss` ({cfg.get('epochs')} epochs, batch "
        f"{cfg.get('batch_size')}, lr {cfg.get('lr')}, AdamW, {cfg.get('warmup_steps')} warm-up steps, cosine "
        f"schedule, seed {cfg.get('seed')}, "
        f"{meta.get('torch_threads', '?')} CPU thread(s))")

    # prompt study
    out = work / "study.json"
    cli("prompts", "--dataset", "shapes:shape", "--templates", "simple", "--templates", "openai-cifar",
        "--templates", "{}", "--select", "-o", str(out), *c)
    study = json.loads(out.read_text())
    small = next(r for r in study["rows"] if r["name"] == "a photo of a small {}." and r["kind"] == "template")
    vs = small["vs_baseline"]
    n_sig = sum(1 for r in study["rows"] if r.get("vs_baseline") and not r["vs_baseline"]["significant"])
    n_cmp = sum(1 for r in study["rows"] if r.get("vs_baseline"))
    word = "worse" if vs["diff"] < 0 else "better"
    why = (" — the word \"small\" pulls shapes towards the size attribute"
           if vs["diff"] < 0 and vs["significant"] else "")
    regions["prompts"] = (
        f"On the tiny model, 'a photo of a small {{}}.' is {abs(100 * vs['diff']):.1f} points {word} than "
        f"'{study['baseline']}' (McNemar p = {vs['mcnemar_p']:.1g}, CI [{signed(100 * vs['ci95'][0])}, "
        f"{signed(100 * vs['ci95'][1])}]){why}; {n_sig} of the {n_cmp} comparisons with the baseline are "
        f"marked n.s.")

    # probes
    out = work / "probe.json"
    cli("probe", "--dataset", "shapes:shape", "--kshot", "1,2,4,8,16", "--seeds", "3", "-o", str(out), *c)
    pr = json.loads(out.read_text())
    ks = {(r["k"], r["variant"]): r for r in pr["kshot"]}
    lines = [f"On the tiny model (shape attribute, zero-shot {pct(pr['zeroshot']['acc1'])} %):", "",
             "| shots/class | probe | probe (zero-shot init) |", "|---|---|---|"]
    for k in (1, 4, 16):
        a, b = ks[(k, "probe")], ks[(k, "probe (zero-shot init)")]
        lines.append(f"| {k} | {pct(a['mean'])} ± {pct(a['std'])} | {pct(b['mean'])} ± {pct(b['std'])} |")
    lp = pr["linear_probe"]
    lines.append(f"| all ({pr['num_train']:,}) | {pct(lp['test']['acc1'])} (train {pct(lp['train']['acc1'])}) | |")
    regions["probe"] = "\n".join(lines)

    # typographic attack
    atk = {}
    for attr in ("position", "color"):
        out = work / f"atk-{attr}.json"
        cli("attack", "typographic", "-d", f"shapes:{attr}", "-o", str(out), *c)
        atk[attr] = json.loads(out.read_text())["metrics"]
    p, col = atk["position"], atk["color"]
    regions["attack"] = (
        f"On the tiny model: position top-1 {pct(p['clean_acc1'])} → {pct(p['attacked_acc1'])} %, and the model "
        f"answers the written label on {pct(p['predicts_written_label'])} % of images "
        f"({pct(p['predicts_written_label_clean'])} % before); colour {pct(col['clean_acc1'])} → "
        f"{pct(col['attacked_acc1'])} %.")

    # caption retrieval
    out = work / "ret.json"
    cli("retrieval", "-d", "shapes", "-o", str(out), *c)
    m = json.loads(out.read_text())["metrics"]
    regions["retrieval"] = (
        f"On the tiny model and {m['num_images']:,} `shapes` test images, text→image R@1 is "
        f"{pct(m['text_to_image_recall@1'])} % (chance {100 / m['num_images']:.1f} %; captions name only some "
        f"attributes, so many images fit each caption), image→text R@5 {pct(m['image_to_text_recall@5'])} %.")

    # query studies (text -> image retrieval with numbers)
    out = work / "queries.json"
    cli("queries", "-d", "shapes:shape", "-t", "a photo of a {}.", "-t", "a photo of a small {}.", "--chain",
        "shapes", "-o", str(out), *c)
    q = json.loads(out.read_text())
    tpl = {t["entry"]: t for t in q["templates"]}
    base, small = tpl["a photo of a {}."], tpl["a photo of a small {}."]
    steps = q["chain"]
    lifts = "; ".join(f"'{s['template']}' {pct(s['base_rate'])} % relevant, P@10 {pct(s['P@10'])} % "
                      f"(lift {signed(100 * s['P@10_lift'])} points, CI [{signed(100 * s['P@10_lift_ci'][0])}, "
                      f"{signed(100 * s['P@10_lift_ci'][1])}])" for s in steps)
    regions["queries"] = (
        f"On the tiny model and the {q['num_images']:,} `shapes` test images: 'a photo of a {{}}.' as a query for each "
        f"shape has mAP {pct(base['mAP'])} % (CI [{pct(base['mAP_ci'][0])}, {pct(base['mAP_ci'][1])}]); 'a photo "
        f"of a small {{}}.' is {signed(100 * small['diff'])} points (CI [{signed(100 * small['diff_ci'][0])}, "
        f"{signed(100 * small['diff_ci'][1])}], p = {small['p']:.2g}). Along the colour → size → shape chain: "
        f"{lifts}.")
    return regions


MARK = re.compile(r"(<!-- numbers:(?P<name>[\w-]+) -->)(?P<body>.*?)(<!-- /numbers:(?P=name) -->)", re.S)


def rewrite(text: str, regions: dict[str, str]) -> str:
    seen = set()

    def sub(mo):
        name = mo.group("name")
        if name not in regions:
            raise SystemExit(f"README region {name!r} has no generator in benchmarks/docs_numbers.py")
        seen.add(name)
        old = mo.group("body")
        if not old.startswith("\n"):  # an inline region
            return f"{mo.group(1)}{regions[name]}{mo.group(4)}"
        indent = old[old.rindex("\n") + 1:]  # keep a list item's indentation
        body = "\n".join(indent + line if line else line for line in regions[name].split("\n"))
        return f"{mo.group(1)}\n{body}\n{indent}{mo.group(4)}"

    out = MARK.sub(sub, text)
    missing = set(regions) - seen
    if missing:
        raise SystemExit(f"README.md lacks the regions {sorted(missing)}")
    return out


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if README.md is out of date")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cliplab-docs-") as tmp:
        cache, work = Path(tmp) / "cache", Path(tmp) / "work"
        work.mkdir()
        regions = compute(cache, work)
    old = args.readme.read_text(encoding="utf-8")
    new = rewrite(old, regions)
    for name, body in regions.items():
        print(f"[{name}]\n{body}\n")
    if args.check:
        if new != old:
            print("README.md figures are out of date: run `make docs-numbers`", file=sys.stderr)
            sys.exit(1)
        print("README.md figures are up to date")
        return
    if new != old:
        from cliplab.io import write_text_atomic

        write_text_atomic(args.readme, new)
        print(f"rewrote {args.readme}")
    else:
        print("README.md unchanged")


if __name__ == "__main__":
    main()
