"""Tables for people (rich)."""
from __future__ import annotations

import math

import numpy as np

from rich.console import Console
from rich.table import Table


def _pct(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def stdout_console(quiet: bool = False) -> Console:
    """Console for tables on stdout; wide enough for the tables when stdout is a file or pipe."""
    import sys

    return Console(quiet=quiet, width=None if sys.stdout.isatty() else 160, markup=False)  # names and paths as written


def prompt_study_table(study) -> Table:
    n_cls = len(study.dataset.classnames)
    table = Table(title=f"prompt study · {study.model.name} · {study.dataset.name} ({study.dataset.split}, "
                        f"{len(study.labels)} images, {n_cls} classes) · baseline: {study.baseline}")
    for col, kw in [("prompts", {"no_wrap": True, "max_width": 48}), ("kind", {}), ("#", {"justify": "right"}),
                    ("top-1 %", {"justify": "right"}), ("Δ pt", {"justify": "right"}),
                    ("95 % CI (pt)", {"justify": "right", "no_wrap": True}), ("McNemar p", {"justify": "right"}),
                    ("", {}), ("best classes", {"max_width": 30}), ("worst classes", {"max_width": 30})]:
        table.add_column(col, **kw)
    rows = sorted(study.rows, key=lambda r: -r.metrics["acc1"])
    for r in rows:
        cmp = r.vs_baseline
        best, worst = study.best_worst_classes(r, k=max(1, min(3, n_cls // 2)))
        if cmp is None:
            delta, ci, p, mark = "baseline", "", "", ""
        else:
            delta = f"{100 * cmp.diff:+.2f}"
            ci = f"[{100 * cmp.ci_low:+.2f}, {100 * cmp.ci_high:+.2f}]"
            p = f"{cmp.p_value:.3g}"
            mark = "*" if cmp.significant else "n.s."
        table.add_row(r.name, r.kind, str(r.n_prompts), _pct(r.metrics["acc1"]), delta, ci, p, mark,
                      ", ".join(best), ", ".join(worst))
    table.caption = ("* = significant (McNemar exact p < 0.05 and bootstrap CI excludes 0); n.s. = not significant"
                     f" · chance {100 / n_cls:.1f} %")
    return table


def probe_table(study) -> Table:
    n_cls = len(study.test.classnames)
    table = Table(title=f"probes · {study.model.name} · {study.test.name} (train: {study.train.split} "
                        f"{len(study.train_images.indices)} images, test: {study.test.split} "
                        f"{len(study.test_images.indices)} images, {n_cls} classes)")
    for col in ("classifier", "shots/class", "train top-1 %", "test top-1 %", f"test top-{min(5, n_cls)} %",
                "mean class recall %", "weight decay"):
        table.add_column(col, justify="left" if col == "classifier" else "right", no_wrap=True)
    if study.zeroshot is not None:
        z = study.zeroshot
        table.add_row(f"zero-shot ({study.templates.name})", "0", "", _pct(z["acc1"]), _pct(z.get("acc5")),
                      _pct(z["mean_per_class_recall"]), "")
    if study.linear is not None:
        lp = study.linear
        table.add_row("linear probe", "all", _pct(lp.train_metrics["acc1"]), _pct(lp.test_metrics["acc1"]),
                      _pct(lp.test_metrics.get("acc5")), _pct(lp.test_metrics["mean_per_class_recall"]),
                      f"{lp.wd:.1e}")
    for r in study.kshot:
        if r.k == 0:
            continue
        acc = f"{100 * r.mean:.2f} ± {100 * r.std:.2f}" if len(r.accs) > 1 else _pct(r.mean)
        table.add_row(r.variant, str(r.k), "", acc, "", "", f"{np.median(r.wds):.1e}")
    seeds = max((len(r.accs) for r in study.kshot if r.k), default=0)
    table.caption = (f"chance = {100 / n_cls:.1f} % · k-shot: mean ± std over {seeds} seeds, weight decay chosen "
                     "on a validation part of the train split" if seeds else f"chance = {100 / n_cls:.1f} %")
    if study.linear is not None:
        lp = study.linear
        state = "converged" if lp.converged else "NOT converged (see warnings)"
        table.caption += (f" · linear probe refit: {lp.model.iterations} L-BFGS iterations, {state} "
                          f"(max |gradient| ≤ {lp.tol:.0e})")
    return table


def probe_sweep_table(study) -> Table | None:
    """The linear probe's weight-decay sweep: train and validation accuracy of every grid point, the choice."""
    sw = study.linear.sweep if study.linear is not None else None
    if sw is None:
        return None
    table = Table(title=f"linear probe weight-decay sweep (fit on {sw.n_train} train images, chosen on "
                        f"{sw.n_val} validation images of the {study.train.split} split)")
    for col in ("weight decay", "C = 1/(wd·n)", "train top-1 %", "val top-1 %", "iterations", "converged", ""):
        table.add_column(col, justify="right", no_wrap=True)
    for p in sw.points:
        mark = "◀ chosen" if p.wd == sw.best else ("added" if p.added else "")
        table.add_row(f"{p.wd:.1e}", f"{1 / (p.wd * sw.n_train):.3g}", _pct(p.train_acc), _pct(p.val_acc),
                      str(p.iterations), "yes" if p.converged else "NO", mark)
    notes = ["best = highest validation accuracy, ties to the larger weight decay"]
    if sw.extended:
        notes.append(f"{len(sw.extended)} point(s) added beyond the grid's end where the choice sat")
    if sw.edge:
        notes.append(f"the choice is still at the {sw.edge} end of the grid: pass a wider grid")
    table.caption = " · ".join(notes)
    return table


def compare_table(rows) -> Table:
    table = Table(title="model comparison (zero-shot" + (" vs linear probe)" if any(
        not math.isnan(r.probe_acc1) for r in rows) else ")"))
    cols = ["model", "dataset", "top-1 %", "top-5 %", "mean class recall %", "sim(true)", "probe test %",
            "probe train %", "images/s", "params (M)", "dim"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "dataset") else "right", no_wrap=c != "model")
    for r in sorted(rows, key=lambda r: (r.dataset, -r.acc1)):
        table.add_row(r.model, r.dataset, _pct(r.acc1), _pct(r.acc5), _pct(r.mean_per_class_recall),
                      f"{r.mean_correct_similarity:.3f}", _pct(r.probe_acc1), _pct(r.probe_train_acc1),
                      "—" if math.isnan(r.images_per_second) else f"{r.images_per_second:,.0f}",
                      f"{r.num_params / 1e6:.2f}", str(r.embed_dim))
    table.caption = "images/s: image-tower throughput when the embeddings were computed (cached runs keep it)"
    return table


def inspect_table(ins, k: int) -> Table:
    table = Table(title=f"per-image ranking · {ins.model.name} · {len(ins.labels)} candidates")
    table.add_column("image", no_wrap=True, max_width=40)
    for j in range(min(k, len(ins.labels))):
        table.add_column(f"#{j + 1} (cos · prob)", max_width=34)
    for row, idx in enumerate(ins.images.indices):
        table.add_row(ins.paths[int(idx)].name, *[f"{lab} ({c:.3f} · {p:.2f})" for lab, c, p in ins.ranking(row, k)])
    return table


def attack_table(res) -> Table:
    s = res.summary()
    table = Table(title=f"typographic attack · {res.model.name} · {res.dataset.name} ({s['n']} images, target rule: "
                        f"{res.rule}, templates: {res.template_set.name})")
    table.add_column("measure")
    table.add_column("clean", justify="right")
    table.add_column("attacked", justify="right")
    table.add_column("change (pt)", justify="right")
    table.add_row("top-1 %", _pct(s["clean_acc1"]), _pct(s["attacked_acc1"]),
                  f"{-100 * s['acc1_drop']:+.2f}")
    table.add_row("mean class recall %", _pct(s["clean_mean_per_class_recall"]),
                  _pct(s["attacked_mean_per_class_recall"]),
                  f"{100 * (s['attacked_mean_per_class_recall'] - s['clean_mean_per_class_recall']):+.2f}")
    table.add_row("predicts the written label %", _pct(s["predicts_written_label_clean"]),
                  _pct(s["predicts_written_label"]),
                  f"{100 * (s['predicts_written_label'] - s['predicts_written_label_clean']):+.2f}")
    table.caption = (f"prediction changed on {100 * s['prediction_changed']:.1f} % of images; "
                     f"{100 * s['correct_flipped_to_written']:.1f} % went from correct to the written label · "
                     f"font {res.params.font_size:g} of the side, {res.params.position}, opacity {res.params.opacity:g}")
    return table


def render(table) -> Table:
    """A study's :class:`cliplab.results.result.Table` as a rich table."""
    out = Table(title=table.title)
    for col in table.columns:
        width = table.wrap.get(col)
        out.add_column(col, justify="right" if col in table.right else "left", no_wrap=width is None,
                       max_width=width)
    for row in table.rows:
        out.add_row(*row)
    if table.caption:
        out.caption = table.caption
    return out
