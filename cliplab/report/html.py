"""``cliplab report``: the results store -> one self-contained HTML file (jinja2 template, matplotlib figures and
image grids embedded as data URIs, no network needed), plus CSV/parquet of all rows and CLIP_benchmark JSONs."""
from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cliplab.errors import CliplabError

HEADLINE = {
    "zeroshot_classification": ["acc1", "acc5", "mean_per_class_recall", "mean_correct_similarity",
                                "images_per_second"],
    "prompt_study": ["acc1", "acc1_diff_vs_baseline", "mcnemar_p"],
    "linear_probe": ["acc1", "train_acc1", "acc5", "mean_per_class_recall", "weight_decay"],
    "kshot_probe": ["acc1_mean", "acc1_std"],
    "caption_retrieval": ["recall@1", "recall@5", "recall@10", "median_rank", "mean_rank"],
    "image_retrieval": ["mAP", "mP@10", "mAP@10", "P@10", "mAP_easy", "mAP_medium", "mAP_hard", "mP@10_medium"],
    "clustering": ["nmi", "ari", "purity", "silhouette"],
    "typographic_attack": ["clean_acc1", "attacked_acc1", "acc1_drop", "predicts_written_label",
                           "predicts_written_label_clean"],
    "search": ["top1_score", "all_scores_mean", "all_scores_p99"],
    "inspection": ["top1_cosine", "top1_probability"],
}
RATES = re.compile(r"^(acc\d|acc1_mean|acc1_std|train_acc1|mean_per_class_recall|recall@\d+|mAP|mAP@\d+|P@\d+|"
                   r"(mAP|mP@\d+)(_easy|_medium|_hard)?|purity|"
                   r"clean_acc1|attacked_acc1|acc1_drop|predicts_written_label.*|prediction_changed|"
                   r"correct_flipped_to_written|acc1_diff_vs_baseline|clean_mean.*|attacked_mean.*)$")


def format_value(metric: str, value) -> str:
    """How a number appears in the report: rates as percentages with two decimals, others with 4 significant
    digits (tests read the page back through this function)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if RATES.match(metric):
        return f"{100 * float(value):.2f}"
    if metric in ("images_per_second", "median_rank"):
        return f"{float(value):,.0f}" if float(value) >= 100 else f"{float(value):g}"
    return f"{float(value):.4g}"


MAX_IMAGE_WIDTH = 1200  # the page is 1200 px wide: embedded images are downscaled to this and palette-encoded


def _data_uri_png(fig) -> str:
    from cliplab.report.plots import _plt, compact_png

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(compact_png(buf.getvalue(), MAX_IMAGE_WIDTH)).decode()


def _file_uri(path: str) -> str | None:
    """A figure file as a data URI; PNG and JPEG files are embedded as thumbnails (at most ``MAX_IMAGE_WIDTH``
    wide, palette PNG / JPEG q85), SVG as it is."""
    p = Path(path)
    if not p.is_file():
        return None
    suffix = p.suffix.lower()
    mime = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(
        suffix, "application/octet-stream")
    data = p.read_bytes()
    try:
        if suffix == ".png":
            from cliplab.report.plots import compact_png

            data = compact_png(data, MAX_IMAGE_WIDTH)
        elif suffix in (".jpg", ".jpeg"):
            data = _jpeg_thumbnail(data)
    except (OSError, ValueError):  # not decodable: embed the file as it is, the browser shows what it can
        pass
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _jpeg_thumbnail(data: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.width <= MAX_IMAGE_WIDTH:
            return data
        im = im.convert("RGB")
        im = im.resize((MAX_IMAGE_WIDTH, max(1, round(im.height * MAX_IMAGE_WIDTH / im.width))), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85, optimize=True)
    return buf.getvalue()


@dataclass
class Figure:
    title: str
    uri: str
    caption: str = ""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    sort_keys: list[list[str]] = field(default_factory=list)  # numeric sort values per cell ("" for text)
    details: list[str] = field(default_factory=list)  # per row: command/config/fingerprint
    n_text: int = 3  # leading text (left-aligned) columns


# ---- rows -> tables -------------------------------------------------------------------------------------------
# config entries that do not change a result (or that have their own column): left out of a row's parameters
_NOT_PARAMETERS = {"model", "pretrained", "dataset", "split", "limit", "batch_size", "workers", "num_workers",
                   "output", "results", "results_format", "cache_dir", "quiet", "predictions", "grid", "grids",
                   "index", "captions", "failures", "examples", "figures", "plot"}
SUMMARY_KEY = ["task", "dataset", "split", "n", "model", "pretrained", "model_fingerprint", "dataset_fingerprint",
               "variant", "parameters"]


def run_parameters(config) -> str:
    """The result-relevant part of a run's config, as canonical JSON (one of the summary's row keys)."""
    try:
        cfg = json.loads(config) if isinstance(config, str) and config else {}
    except json.JSONDecodeError:
        return str(config)
    if not isinstance(cfg, dict):
        return json.dumps(cfg, sort_keys=True, default=str)
    return json.dumps({k: v for k, v in cfg.items() if k not in _NOT_PARAMETERS and v is not None}, sort_keys=True,
                      default=str)


def _param_text(params: str, shown: set[str]) -> str:
    try:
        cfg = json.loads(params)
    except json.JSONDecodeError:
        return params
    return " ".join(f"{k}={json.dumps(cfg[k], default=str)}" for k in sorted(shown) if k in cfg)


def _blank(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def summary_tables(df: pd.DataFrame) -> list[Table]:
    """One table per task: a row per (dataset, split, n, model, variant, parameters) with the headline metrics of
    the latest run for that key. Runs on different splits, sample counts, model or data versions or parameters
    never share or replace each other's row."""
    out = []
    df = df.assign(parameters=[run_parameters(c) for c in df["config"]]) if "config" in df else df.assign(
        parameters="{}")
    for col in SUMMARY_KEY:
        if col not in df:
            df = df.assign(**{col: None})
    for task, metrics in HEADLINE.items():
        sub = df[(df.task == task) & df.metric.isin(metrics)]
        if sub.empty:
            continue
        groups = []
        for key, grp in sub.groupby(SUMMARY_KEY, dropna=False, sort=True):
            grp = grp.sort_values("timestamp", kind="stable")
            groups.append((key, grp[grp.run_id == grp.run_id.iloc[-1]]))
        present = [m for m in metrics if any(m in set(g.metric) for _, g in groups)]
        # parameters column: only the config entries whose values differ between rows of this table
        cfgs = [json.loads(k[9]) if k[9].startswith("{") else {"config": k[9]} for k, _ in groups]
        varying = {k for c in cfgs for k in c if len({json.dumps(d.get(k), sort_keys=True, default=str)
                                                       for d in cfgs}) > 1}
        visible = [(k[1], k[2], k[3], k[4], k[5], k[8], _param_text(k[9], varying)) for k, _ in groups]
        clashes = {v for v in visible if visible.count(v) > 1}  # same visible cells: tell them apart
        show_params = bool(varying or clashes)
        columns = ["dataset", "split", "n", "model", "variant"] + (["parameters"] if show_params else []) + present
        table = Table(title=task.replace("_", " "), columns=columns, rows=[], n_text=len(columns) - len(present))
        for (key, grp), vis in zip(groups, visible):
            _, dataset, split, n, model, pretrained, mfp, dfp, variant, _ = key
            vals = dict(zip(grp.metric, grp.value))
            ci = {m: (lo, hi) for m, lo, hi in zip(grp.metric, grp.ci_low, grp.ci_high)}
            name = str(model) + (f" ({Path(str(pretrained)).name})" if isinstance(pretrained, str) and pretrained
                                 else "")
            n_text = "—" if _blank(n) else str(int(n))
            cells = [str(dataset), "" if _blank(split) else str(split), n_text, name, str(variant)]
            sorts = ["", "", "" if _blank(n) else repr(float(n)), "", ""]
            if show_params:
                ptext = vis[6]
                if vis in clashes:
                    ptext = (ptext + f" model {str(mfp)[:8]} data {str(dfp)[:8]}").strip()
                cells.append(ptext)
                sorts.append("")
            for m in present:
                v = vals.get(m)
                text = format_value(m, v)
                lo, hi = ci.get(m, (None, None))
                if not _blank(lo):
                    text += f" [{format_value(m, lo)}, {format_value(m, hi)}]"
                cells.append(text)
                sorts.append("" if _blank(v) else repr(float(v)))
            first = grp.iloc[0]
            table.rows.append(cells)
            table.sort_keys.append(sorts)
            table.details.append(f"command: cliplab {first.command} · run {first.run_id} · {first.timestamp} · "
                                 f"model fingerprint {first.model_fingerprint} · dataset fingerprint "
                                 f"{first.dataset_fingerprint} · cliplab {first.cliplab_version} · config "
                                 f"{first.config}")
        out.append(table)
    return out


# ---- rows -> figures ------------------------------------------------------------------------------------------
def comparison_figure(df: pd.DataFrame) -> Figure | None:
    from cliplab.report.plots import grouped_bars

    zs = df[(df.task == "zeroshot_classification") & (df.metric == "acc1")]
    lp = df[(df.task == "linear_probe") & (df.metric == "acc1")]
    if zs.empty or (zs.model.nunique() < 2 and lp.empty):
        return None
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
    return Figure("Model comparison", _data_uri_png(fig), "latest run per model and dataset; zero-shot with its "
                  "first template set")


def prompt_figures(df: pd.DataFrame) -> list[Figure]:
    from cliplab.report.plots import _plt

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
        out.append(Figure(f"Prompt study: {first.model} on {first.dataset}", _data_uri_png(fig),
                          "* = significant (McNemar exact p < 0.05 and CI excludes 0); grey = not significant"))
    return out


def kshot_figures(df: pd.DataFrame) -> list[Figure]:
    from cliplab.report.plots import _plt

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
        out.append(Figure(f"k-shot probes: {first.model} on {first.dataset}", _data_uri_png(fig)))
    return out


def per_class_figures(df: pd.DataFrame, max_runs: int = 6) -> list[Figure]:
    from cliplab.report.plots import _plt

    plt = _plt()
    out = []
    zs = df[(df.task == "zeroshot_classification") & df.metric.str.startswith("recall[")]
    conf = df[(df.task == "zeroshot_classification") & df.metric.str.startswith("confusion[")]
    for (run_id, variant), grp in list(zs.groupby(["run_id", "variant"], sort=False))[:max_runs]:
        names = grp.metric.str.slice(7, -1).tolist()
        vals = grp.value.to_numpy(dtype=float) * 100
        order = np.argsort(vals)
        if len(order) > 40:
            order = np.concatenate([order[:20], order[-20:]])
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, max(3, 0.25 * len(order) + 1)),
                                     gridspec_kw={"width_ratios": [1, 1.1]})
        a0.barh(np.arange(len(order)), vals[order], color="tab:blue")
        a0.set_yticks(np.arange(len(order)), [names[i] for i in order], fontsize=7)
        a0.set_xlabel("recall (%)")
        a0.set_xlim(0, 100)
        a0.set_title("per-class accuracy" + (" (20 worst, 20 best)" if len(names) > 40 else ""), fontsize=9)
        c = conf[(conf.run_id == run_id) & (conf.variant == variant)]
        if len(c):
            pairs = c.metric.str.extract(r"^confusion\[(?P<t>.*) -> (?P<p>.*)\]$")
            if len(c) == len(names) ** 2:
                idx = {n: i for i, n in enumerate(names)}
                cm = np.zeros((len(names), len(names)))
                for t, p, v in zip(pairs.t, pairs.p, c.value):
                    cm[idx[t], idx[p]] = v
                rows = cm.sum(1, keepdims=True)
                im = a1.imshow(cm / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
                tick = np.arange(len(names))
                a1.set_xticks(tick, names, rotation=90, fontsize=6)
                a1.set_yticks(tick, names, fontsize=6)
                a1.set_xlabel("predicted")
                a1.set_ylabel("true")
                fig.colorbar(im, ax=a1, fraction=0.046)
                a1.set_title("confusion (row-normalised)", fontsize=9)
            else:
                top = c.assign(t=pairs.t, p=pairs.p).sort_values("value").tail(20)
                a1.barh(np.arange(len(top)), top.value, color="tab:orange")
                a1.set_yticks(np.arange(len(top)), [f"{t} → {p}" for t, p in zip(top.t, top.p)], fontsize=7)
                a1.set_title("top confusions (count)", fontsize=9)
        else:
            a1.axis("off")
        first = grp.iloc[0]
        fig.suptitle(f"{first.model} · {first.dataset} · {variant}", fontsize=10)
        fig.tight_layout()
        out.append(Figure(f"Per-class accuracy: {first.model} on {first.dataset} ({variant})", _data_uri_png(fig)))
    return out


def score_distribution_figure(df: pd.DataFrame) -> Figure | None:
    from cliplab.report.plots import _plt

    s = df[(df.task == "search") & df.metric.isin(["all_scores_mean", "all_scores_std", "top1_score",
                                                    "all_scores_p99"])]
    if s.empty:
        return None
    plt = _plt()
    piv = s.pivot_table(index=["model", "variant"], columns="metric", values="value", aggfunc="last")
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(piv) + 1.2))
    y = np.arange(len(piv))
    ax.errorbar(piv["all_scores_mean"], y, xerr=piv["all_scores_std"], fmt="o", label="all images: mean ± std")
    ax.scatter(piv["all_scores_p99"], y, marker="|", s=120, label="99th percentile")
    ax.scatter(piv["top1_score"], y, marker="*", s=60, label="top-1")
    ax.set_yticks(y, [f"{v} · {m}" for m, v in piv.index], fontsize=7)
    ax.set_xlabel("cosine similarity")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return Figure("Score distributions per query", _data_uri_png(fig))


def image_figures(df: pd.DataFrame) -> list[Figure]:
    out = []
    art = df[df.artifact.notna()].drop_duplicates("artifact")
    for _, r in art.iterrows():
        uri = _file_uri(r.artifact)
        if uri is None:
            continue
        out.append(Figure(f"{r.variant}", uri, f"{r.model} · {r.dataset} · cliplab {r.command} · run {r.run_id}"))
    return out


# ---- CLIP_benchmark interop -----------------------------------------------------------------------------------
def clip_benchmark_records(df: pd.DataFrame) -> list[dict]:
    """One CLIP_benchmark-style JSON per zero-shot / retrieval result of the store."""
    out = []
    zs = df[df.task == "zeroshot_classification"]
    for (run_id, model, pre, ds, variant), g in zs.groupby(["run_id", "model", "pretrained", "dataset", "variant"],
                                                           dropna=False, sort=False):
        m = {k: v for k, v in zip(g.metric, g.value) if k in ("acc1", "acc5", "mean_per_class_recall")}
        if m:
            out.append({"dataset": ds, "model": model, "pretrained": pre, "task": "zeroshot_classification",
                        "metrics": m, "language": "en", "templates": variant, "run_id": run_id})
    rt = df[df.task == "caption_retrieval"]
    for (run_id, model, pre, ds), g in rt.groupby(["run_id", "model", "pretrained", "dataset"], dropna=False,
                                                  sort=False):
        m = {}
        for v, k, val in zip(g.variant, g.metric, g.value):
            if k.startswith("recall@"):
                prefix = "image_retrieval" if v == "text_to_image" else "text_retrieval"
                m[f"{prefix}_{k}"] = val
        out.append({"dataset": ds, "model": model, "pretrained": pre, "task": "zeroshot_retrieval", "metrics": m,
                    "language": "en", "run_id": run_id})
    return out


def import_clip_benchmark(paths: list[str | Path]) -> pd.DataFrame:
    """CLIP_benchmark result JSONs -> store rows (command ``clip_benchmark``) so they sit beside cliplab's."""
    from cliplab.results.store import COLUMNS

    rows = []
    for p in paths:
        p = Path(p)
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CliplabError(f"--clip-benchmark {p}: cannot read ({exc})") from None
        if not isinstance(rec, dict) or not {"dataset", "model", "task", "metrics"} <= set(rec):
            raise CliplabError(f"--clip-benchmark {p}: not a CLIP_benchmark result (needs dataset, model, task, "
                               "metrics)")
        base = {"run_id": f"cb-{p.stem}", "timestamp": "", "cliplab_version": "", "command": "clip_benchmark",
                "model": rec["model"], "pretrained": rec.get("pretrained") or "", "model_fingerprint": "",
                "dataset": rec["dataset"], "split": rec.get("split", "test"), "dataset_fingerprint": "",
                "ci_low": None, "ci_high": None, "seed": None, "n": None, "config": json.dumps({"file": str(p)}),
                "artifact": None}
        for k, v in rec["metrics"].items():
            if rec["task"] == "zeroshot_retrieval" and "_retrieval_" in k:
                direction, metric = k.split("_retrieval_")
                variant = "text_to_image" if direction == "image" else "image_to_text"
                rows.append({**base, "task": "caption_retrieval", "variant": variant + " (CLIP_benchmark)",
                             "metric": metric, "value": float(v)})
            elif isinstance(v, (int, float)):
                rows.append({**base, "task": rec["task"], "variant": "CLIP_benchmark", "metric": k, "value": float(v)})
    return pd.DataFrame(rows, columns=COLUMNS)


# ---- the page -------------------------------------------------------------------------------------------------
def build_report(df: pd.DataFrame, out: str | Path, *, title: str = "cliplab report", sources=(),
                 exports: bool = True) -> Path:
    """Render the page; with ``exports`` also write ``<stem>.csv``, ``<stem>.parquet`` and
    ``<stem>-clip_benchmark/*.json`` beside it."""
    import jinja2

    from cliplab.io import write_json_atomic, write_text_atomic
    from cliplab.results.exports import provenance, write_table

    if df.empty:
        raise CliplabError("the results store is empty: run a study with --results DIR first")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    links = {}
    if exports:
        write_table(out.with_suffix(".csv"), df)
        write_table(out.with_suffix(".parquet"), df)
        cb_dir = out.with_name(out.stem + "-clip_benchmark")
        cb_dir.mkdir(exist_ok=True)
        for i, rec in enumerate(clip_benchmark_records(df)):
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{rec['task']}-{rec['model']}-{rec['dataset']}-{i}")
            write_json_atomic(cb_dir / f"{safe}.json", rec)
        links = {"CSV (all rows)": out.with_suffix(".csv").name, "Parquet (all rows)": out.with_suffix(".parquet").name,
                 "CLIP_benchmark JSON files": cb_dir.name + "/"}
    figures = [f for f in [comparison_figure(df)] if f] + prompt_figures(df) + kshot_figures(df) + \
        per_class_figures(df) + [f for f in [score_distribution_figure(df)] if f]
    env = jinja2.Environment(loader=jinja2.PackageLoader("cliplab.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(
        title=title, sources=[str(s) for s in sources], tables=summary_tables(df), figures=figures,
        images=image_figures(df), links=links, n_rows=len(df), n_runs=df.run_id.nunique(),
        generated=provenance(), csv_uri="data:text/csv;base64," + base64.b64encode(
            df.to_csv(index=False).encode()).decode() if len(df) < 200_000 else None)
    write_text_atomic(out, page)
    return out
