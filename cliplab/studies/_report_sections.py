"""How the HTML report shows each study's task (temporary home while the studies move onto the contract; each
section moves into its study module)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from cliplab.report.plots import _plt
from cliplab.results.result import ReportFigure, ReportSection


def comparison_figure(df: pd.DataFrame) -> list[ReportFigure]:
    from cliplab.report.plots import grouped_bars

    zs = df[(df.task == "zeroshot_classification") & (df.metric == "acc1")]
    lp = df[(df.task == "linear_probe") & (df.metric == "acc1")]
    if zs.empty or (zs.model.nunique() < 2 and lp.empty):
        return []
    datasets = sorted(zs.dataset.unique())

    def zs_value(m, d):  # the first template set of the latest run for this model and dataset
        sub = zs[(zs.model == m) & (zs.dataset == d)].sort_values("timestamp", kind="stable")
        return sub[sub.run_id == sub.run_id.iloc[-1]].value.iloc[0] if len(sub) else np.nan

    series: dict[str, list[float]] = {}
    for m in sorted(zs.model.unique()):
        series[f"{m} · zero-shot"] = [zs_value(m, d) for d in datasets]
        if not lp.empty and m in set(lp.model):
            series[f"{m} · linear probe"] = [lp[(lp.model == m) & (lp.dataset == d)].sort_values("timestamp")
                                             .value.iloc[-1] if len(lp[(lp.model == m) & (lp.dataset == d)])
                                             else np.nan for d in datasets]
    fig = grouped_bars(datasets, series, ylabel="top-1 accuracy (%)", title="model comparison")
    return [ReportFigure("Model comparison", fig, "latest run per model and dataset; zero-shot with its "
                         "first template set")]


def prompt_figures(df: pd.DataFrame) -> list[ReportFigure]:
    plt = _plt()
    out = []
    ps = df[df.task == "prompt_study"]
    for run_id, run in ps.groupby("run_id", sort=False):
        diff = run[run.metric == "acc1_diff_vs_baseline"].sort_values("value")
        if diff.empty:
            continue
        p = dict(zip(run[run.metric == "mcnemar_p"].variant, run[run.metric == "mcnemar_p"].value))
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(diff) + 1.2))
        y = np.arange(len(diff))
        err = np.vstack([(diff.value - diff.ci_low).to_numpy(), (diff.ci_high - diff.value).to_numpy()]) * 100
        sig = [(lo > 0 or hi < 0) and p.get(v, 1) < 0.05 for v, lo, hi in zip(diff.variant, diff.ci_low, diff.ci_high)]
        ax.barh(y, diff.value * 100, xerr=err, color=["tab:blue" if s else "lightgray" for s in sig], capsize=2)
        ax.set_yticks(y, [v if len(v) < 50 else v[:47] + "..." for v in diff.variant], fontsize=7)
        for yi, v, s in zip(y, diff.value * 100, sig):
            ax.annotate("*" if s else "n.s.", (v, yi), xytext=(4 if v >= 0 else -4, 0), textcoords="offset points",
                        ha="left" if v >= 0 else "right", va="center", fontsize=7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("top-1 difference to the baseline (points), 95 % bootstrap CI")
        first = run.iloc[0]
        ax.set_title(f"prompt study · {first.model} · {first.dataset}", fontsize=9)
        out.append(ReportFigure(f"Prompt study: {first.model} on {first.dataset}", fig,
                          "* = significant (McNemar exact p < 0.05 and CI excludes 0); grey = not significant"))
    return out


def kshot_figures(df: pd.DataFrame) -> list[ReportFigure]:
    plt = _plt()
    out = []
    ks = df[(df.task == "kshot_probe") & (df.metric == "acc1")]
    for run_id, run in ks.groupby("run_id", sort=False):
        parsed = run.variant.str.extract(r"^(?P<name>.*) k=(?P<k>\d+)$")
        run = run.assign(name=parsed["name"], k=parsed["k"].astype(int))
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for name, grp in run.groupby("name"):
            if name == "zero-shot":
                ax.axhline(grp.value.mean() * 100, color="grey", linestyle="--", label="zero-shot")
                continue
            stats = grp.groupby("k").value.agg(["mean", "std"]).fillna(0)
            ax.errorbar(stats.index, stats["mean"] * 100, yerr=stats["std"] * 100, marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("test top-1 (%), mean ± std over seeds")
        first = run.iloc[0]
        ax.set_title(f"k-shot probes · {first.model} · {first.dataset}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out.append(ReportFigure(f"k-shot probes: {first.model} on {first.dataset}", fig))
    return out


REPORT_SECTIONS = [
    ReportSection("compare", figures=comparison_figure, order=5),
    ReportSection("prompt_study", ("acc1", "acc1_diff_vs_baseline", "mcnemar_p"), rates=r"acc1_diff_vs_baseline",
                  figures=prompt_figures, order=20),
    ReportSection("linear_probe", ("acc1", "train_acc1", "acc5", "mean_per_class_recall", "weight_decay"),
                  rates=r"train_acc1", order=30),
    ReportSection("kshot_probe", ("acc1_mean", "acc1_std"), rates=r"acc1_mean|acc1_std", figures=kshot_figures,
                  order=35),
    ReportSection("typographic_attack", ("clean_acc1", "attacked_acc1", "acc1_drop", "predicts_written_label",
                                         "predicts_written_label_clean"),
                  rates=r"clean_acc1|attacked_acc1|acc1_drop|predicts_written_label.*|prediction_changed|"
                        r"correct_flipped_to_written|clean_mean.*|attacked_mean.*", order=70),
    ReportSection("inspection", ("top1_cosine", "top1_probability"), order=90),
]
