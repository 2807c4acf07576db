"""Long class descriptions: truncate vs windows (--long-text) against a template baseline, in a prompt study.

    python benchmarks/long_descriptions.py [--model tiny-shapes] [--dataset shapes:color] [--limit N] [--seed 0]

Writes, for each class of the dataset, ``--per-class`` encyclopedia-style descriptions of 150-300 tokens (seeded):
an opening sentence naming the class (as an encyclopedia entry opens), then sentences drawn at random from three
pools -- about the class's own colour, comparing it with another colour (naming that one too), and generic ones
about shapes and drawings (naming no colour) -- until the description has its length. Then runs one prompt study per
``long_text`` mode on the same images (baseline: the template 'a photo of a {}.'; descriptions aggregated by mean)
and compares the two description rows with each other by the same paired test (bootstrap CI, McNemar exact).
Prints the rows and the pairwise comparison and saves them under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from _common import machine, markdown_table, save

OWN = ["{c} is one of the colours of the visible spectrum.", "Objects painted {c} stand out on a light background.",
       "The {c} pigment has been used by painters for centuries.", "A {c} shape is easy to spot among others.",
       "Many flags use {c} as one of their colours.", "In printing, {c} ink is mixed from primary inks.",
       "The word {c} comes from an old root.", "Children often name {c} as a favourite colour.",
       "Traffic signs sometimes use {c} to catch the eye.", "A {c} object reflects light of its own wavelength."]
OTHER = ["{c} sits next to {o} on the colour wheel.", "Unlike {o}, {c} is often linked to a feeling.",
         "Mixed with {o}, {c} gives a darker tone.", "{c} and {o} are often confused in dim light.",
         "Some languages use one word for both {c} and {o}."]
GENERIC = ["A shape is a figure drawn on a plain, striped or checkered background.",
           "Shapes can be small or large, and sit in a corner or the centre of the picture.",
           "Circles, squares, triangles, stars and crosses are the most common shapes.",
           "Drawings like these are used to teach children the names of things.",
           "The picture is small, only sixty four pixels wide.",
           "A figure may be rotated by any angle without changing what it is.",
           "Edges are smoothed so that the outline looks clean.",
           "Backgrounds may be noisy or carry a gentle gradient."]


def describe(colour: str, others: list[str], tok, lo: int, hi: int, rng: random.Random) -> str:
    """One description of ``colour`` with a length drawn from [lo, hi] tokens (SOT and EOT included)."""
    target = rng.randint(lo, hi)
    words = [f"{colour.capitalize()} is a colour, and a {colour} shape is a figure drawn in it."]
    while True:
        pool = rng.choice([OWN, OTHER, GENERIC])
        s = rng.choice(pool).format(c=colour, o=rng.choice(others))
        s = s[0].upper() + s[1:]
        nxt = " ".join(words + [s])
        if len(tok.encode(nxt)) + 2 > target and len(tok.encode(" ".join(words))) + 2 >= lo:
            return " ".join(words)
        words.append(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-shapes")
    ap.add_argument("--dataset", default="shapes:color")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--per-class", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args()

    import numpy as np

    import cliplab
    from cliplab.embed.long_text import layout
    from cliplab.tasks.stats import compare_paired

    model = cliplab.load_model(args.model, device="cpu", backend="torch")
    lay = layout(model)
    tok = model.tokenizer
    data = cliplab.load_dataset(args.dataset)
    colours = [c.split()[0] for c in data.classnames]
    rng = random.Random(args.seed)
    desc = {name: [describe(c, [o for o in colours if o != c], tok, 150, 300, rng) for _ in range(args.per_class)]
            for name, c in zip(data.classnames, colours)}
    lengths = [n for texts in desc.values() for n in lay.lengths(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.json"
        path.write_text(json.dumps(desc))
        runs = {mode: cliplab.prompts(model, args.dataset, templates="a photo of a {}.", descriptions=str(path),
                                      long_text=mode, limit=args.limit, bootstrap=args.bootstrap, seed=args.seed,
                                      quiet=True)
                for mode in ("truncate", "windows")}
    rows = []
    for mode, res in runs.items():
        for r in res.rows:
            if r.kind == "template" and mode == "windows":
                continue  # the baseline is the same row in both runs
            c = r.vs_baseline
            rows.append({"row": r.name if r.kind == "template" else f"descriptions, {mode}",
                         "top-1 %": f"{100 * r.metrics['acc1']:.2f}",
                         "Δ vs baseline (pt)": "baseline" if c is None else f"{100 * c.diff:+.2f}",
                         "95 % CI (pt)": "" if c is None else f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]",
                         "McNemar p": "" if c is None else f"{c.p_value:.3g}"})
    t, w = (next(r for r in runs[m].rows if r.kind == "descriptions") for m in ("truncate", "windows"))
    assert np.array_equal(runs["truncate"].images.indices, runs["windows"].images.indices)  # the same images
    pair = compare_paired(t.correct, w.correct, n_boot=args.bootstrap, seed=args.seed)
    n = len(runs["truncate"].labels)
    print(f"{args.model} on {args.dataset} ({n} images), {len(lengths)} descriptions of {min(lengths)}-{max(lengths)} "
          f"tokens (mean {np.mean(lengths):.0f}), text context {lay.context_length}, windows of {lay.window} tokens")
    print(markdown_table(rows, list(rows[0])))
    line = (f"windows - truncate: {100 * pair.diff:+.2f} pt, 95 % CI [{100 * pair.ci_low:+.2f}, "
            f"{100 * pair.ci_high:+.2f}], McNemar p = {pair.p_value:.3g} (only truncate right: {pair.only_a}, "
            f"only windows right: {pair.only_b})")
    print(line)
    save("long_descriptions", {"machine": machine(), "args": vars(args), "lengths": lengths, "rows": rows,
                               "windows_vs_truncate": {"diff": pair.diff, "ci95": [pair.ci_low, pair.ci_high],
                                                       "mcnemar_p": pair.p_value, "only_truncate": pair.only_a,
                                                       "only_windows": pair.only_b}, "example": desc[data.classnames[0]][0]})


if __name__ == "__main__":
    main()
