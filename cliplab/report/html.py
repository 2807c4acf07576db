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
from typing import Any

import jinja2
from markupsafe import Markup, escape
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict

from cliplab.errors import CliplabError
from cliplab.files import Name, Shape, Str, UserFile
from cliplab.io import write_text_atomic
from cliplab.progress import progress_bar
from cliplab.report.plots import PAGE_PX, REPORT_DPI, compact_png, figure_data_uri, figure_description
from cliplab.report.rows import natural_key
from cliplab.results.exports import provenance, write_json, write_table
from cliplab.results.result import tidy_metrics
from cliplab.results.store import COLUMNS, FIGURES
from cliplab.registry import report_sections

def sections() -> list:
    """How each task is shown: declared by the studies (:mod:`cliplab.registry`; the doors discover them)."""
    return report_sections()


def _rates() -> re.Pattern:
    return re.compile("^(" + "|".join(f"(?:{s.rates})" for s in sections() if s.rates) + ")$")


def format_value(metric: str, value) -> str:
    """How a number appears in the report: rates as percentages with two decimals, others with 4 significant
    digits (tests read the page back through this function)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if _rates().match(metric):
        return f"{100 * float(value):.2f}"
    if metric in ("images_per_second", "median_rank"):
        return f"{float(value):,.0f}" if float(value) >= 100 else f"{float(value):g}"
    return f"{float(value):.4g}"


MAX_IMAGE_WIDTH = PAGE_PX  # the page is 1200 px wide: embedded images are downscaled to this and palette-encoded


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
            data = compact_png(data, MAX_IMAGE_WIDTH)
        elif suffix in (".jpg", ".jpeg"):
            data = _jpeg_thumbnail(data)
    except (OSError, ValueError):  # not decodable: embed the file as it is, the browser shows what it can
        pass
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _jpeg_thumbnail(data: bytes) -> bytes:
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
    group: str = ""  # figures of one run's artifact of many files share it (see :func:`figure_sets`)


@dataclass
class FigureSet:
    """Figures shown together: one figure as it is, or many near-identical ones (one per query, one per image)
    as one picker that shows one figure at a time."""
    figures: list[Figure]
    caption: str = ""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    sort_keys: list[list[str]] = field(default_factory=list)  # numeric sort values per cell ("" for text)
    details: list[str] = field(default_factory=list)  # per row: command/config/fingerprint
    n_text: int = 3  # leading text (left-aligned) columns
    caption: list[str] = field(default_factory=list)  # above the table: what every row shares, parameter legend


# ---- rows -> tables -------------------------------------------------------------------------------------------
# config entries that do not change a result (or that have their own column): left out of a row's parameters
_NOT_PARAMETERS = {"model", "pretrained", "dataset", "split", "limit", "batch_size", "workers", "num_workers",
                   "output", "results", "results_format", "cache_dir", "quiet", "predictions", "grid", "grids",
                   "index", "captions", "failures", "examples", "figures", "plot"}
SUMMARY_KEY = ["task", "dataset", "split", "n", "model", "pretrained", "model_fingerprint", "dataset_fingerprint",
               "variant", "parameters"]
IDENTITY = ["dataset", "split", "n", "model"]  # a column only when rows differ in it; else said once, in the caption
MAX_PARAMETER_TEXT = 40  # longer parameter cells become a reference to the caption, where the text is given once


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


def _param_text(cfg: dict, shown) -> str:
    return " ".join(f"{k}={json.dumps(cfg[k], default=str)}" for k in sorted(shown) if k in cfg)


def _blank(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _config(params: str) -> dict:
    try:
        cfg = json.loads(params)
    except json.JSONDecodeError:
        return {"config": params}
    return cfg if isinstance(cfg, dict) else {"config": params}


def _sort_key(key: tuple) -> tuple:
    """Table rows in natural order: numbers inside text as numbers ('probe k=2' before 'probe k=16'), n as a
    number."""
    return tuple(natural_key(None if _blank(v) else float(v) if c == "n" else v) for c, v in zip(SUMMARY_KEY, key))


def summary_tables(df: pd.DataFrame) -> list[Table]:
    """One table per task: a row per (dataset, split, n, model, variant, parameters) with the headline metrics of
    the latest run for that key. Runs on different splits, sample counts, model or data versions or parameters
    never share or replace each other's row. What every row shares (dataset, split, n, model, parameters) is said
    once, in the caption above the table; only what differs between rows is a column."""
    out = []
    df = df.assign(parameters=[run_parameters(c) for c in df["config"]]) if "config" in df else df.assign(
        parameters="{}")
    for col in SUMMARY_KEY:
        if col not in df:
            df = df.assign(**{col: None})
    for section in sections():
        task, metrics = section.task, list(section.headline)
        sub = df[(df.task == task) & df.metric.isin(metrics)]
        if sub.empty:
            continue
        groups = []
        for key, grp in sub.groupby(SUMMARY_KEY, dropna=False, sort=False):
            grp = grp.sort_values("timestamp", kind="stable")
            groups.append((key, grp[grp.run_id == grp.run_id.iloc[-1]]))
        groups.sort(key=lambda g: _sort_key(g[0]))
        present = [m for m in metrics if any(m in set(g.metric) for _, g in groups)]
        cfgs = [_config(k[9]) for k, _ in groups]
        values = {k: {json.dumps(c.get(k), sort_keys=True, default=str) for c in cfgs}
                  for k in dict.fromkeys(k for c in cfgs for k in c)}
        varying = {k for k, v in values.items() if len(v) > 1 or any(k not in c for c in cfgs)}
        shared = sorted(set(values) - varying)
        ids = [{"dataset": str(k[1]), "split": "" if _blank(k[2]) else str(k[2]),
                "n": "—" if _blank(k[3]) else str(int(k[3])),
                "model": str(k[4]) + (f" ({Path(str(k[5])).name})" if isinstance(k[5], str) and k[5] else "")}
               for k, _ in groups]
        columns_ids = [c for c in IDENTITY if len({i[c] for i in ids}) > 1]
        visible = [(tuple(i.values()), k[8], _param_text(c, varying)) for i, (k, _), c in zip(ids, groups, cfgs)]
        clashes = {v for v in visible if visible.count(v) > 1}  # same visible cells: tell them apart
        ptexts = [(v[2] + (f" model {str(k[6])[:8]} data {str(k[7])[:8]}" if v in clashes else "")).strip()
                  for v, (k, _) in zip(visible, groups)]
        show_params = any(ptexts)
        caption = []
        if any(c not in columns_ids for c in IDENTITY):
            caption.append("every row: " + " · ".join(f"{c} {ids[0][c]}" for c in IDENTITY if c not in columns_ids
                                                       and ids[0][c]))
        if shared:
            caption.append("parameters of every row: " + _param_text(cfgs[0], shared))
        refs = {}
        if show_params and max(len(t) for t in ptexts) > MAX_PARAMETER_TEXT:
            refs = {t: f"[{i + 1}]" for i, t in enumerate(dict.fromkeys(t for t in ptexts if t))}
            caption.append("parameters: " + " · ".join(f"{r} {t}" for t, r in refs.items()))
        columns = columns_ids + ["variant"] + (["parameters"] if show_params else []) + present
        table = Table(title=task.replace("_", " "), columns=columns, rows=[], n_text=len(columns) - len(present),
                      caption=caption)
        for (key, grp), ident, ptext in zip(groups, ids, ptexts):
            vals = dict(zip(grp.metric, grp.value))
            ci = {m: (lo, hi) for m, lo, hi in zip(grp.metric, grp.ci_low, grp.ci_high)}
            cells = [ident[c] for c in columns_ids] + [str(key[8])]
            sorts = ["" if c != "n" or _blank(key[3]) else repr(float(key[3])) for c in columns_ids] + [""]
            if show_params:
                cells.append(refs.get(ptext, ptext))
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
def report_figures(df: pd.DataFrame) -> list:
    """The figures every task's report section draws from the rows (``ReportFigure``: title, matplotlib figure,
    caption), in the page's order."""
    drawn = [s.figures for s in sections() if s.figures]
    figures = []
    with progress_bar(len(drawn), "drawing figures", unit="sections") as bar:
        for draw in drawn:
            figures += draw(df)
            bar.advance()
    return figures


def image_figures(df: pd.DataFrame) -> list[Figure]:
    """The figure files of the store, each captioned with the description it carries (e.g. how its images were
    chosen), its model, dataset and run."""
    out = []
    art = df[df.artifact.notna()].drop_duplicates("artifact")
    for _, r in art.iterrows():
        uri = _file_uri(r.artifact)
        if uri is None:
            continue
        note = figure_description(r.artifact)
        folder = Path(r.artifact).parent  # a run's figures of many files sit in a folder of their own
        out.append(Figure(f"{r.variant}", uri, (f"{note} · " if note else "") +
                          f"{r.model} · {r.dataset} · cliplab {r.command} · run {r.run_id}",
                          group=str(folder) if folder.name != FIGURES else ""))
    return out


def figure_sets(figures: list[Figure]) -> list[FigureSet]:
    """Consecutive figures of one group become one set (the page shows it as a picker); every other figure is a
    set of its own. The set's caption is what its figures' captions share."""
    sets: list[FigureSet] = []
    for f in figures:
        if f.group and sets and sets[-1].figures[0].group == f.group:
            sets[-1].figures.append(f)
        else:
            sets.append(FigureSet([f]))
    for s in sets:
        if len(s.figures) > 1:
            parts = [f.caption.split(" · ") for f in s.figures]
            shared = [p for p in parts[0] if all(p in other for other in parts[1:])]
            s.caption = f"{len(s.figures)} figures · " + " · ".join(shared)
    return sets


# ---- CLIP_benchmark interop -----------------------------------------------------------------------------------
def clip_benchmark_records(df: pd.DataFrame) -> list[dict]:
    """CLIP_benchmark-style JSON records of the store's rows, for the tasks CLIP_benchmark has."""
    return [rec for s in sections() if s.clip_benchmark for rec in s.clip_benchmark(df[df.task == s.task])]


class ClipBenchmarkResult(BaseModel):
    """A CLIP_benchmark result JSON: the fields cliplab reads (others are allowed)."""
    model_config = ConfigDict(extra="allow")
    dataset: Name
    model: Name
    pretrained: Str | None = None
    task: Name
    split: Str = "test"
    metrics: dict[Str, Any]


CLIP_BENCHMARK = Shape(ClipBenchmarkResult, "a CLIP_benchmark result (dataset, model, task, metrics)")


def import_clip_benchmark(paths: list[str | Path]) -> pd.DataFrame:
    """CLIP_benchmark result JSONs -> store rows (command ``clip_benchmark``) so they sit beside cliplab's (the tidy
    columns :func:`cliplab.read_results` gives)."""
    rows = []
    for p in paths:
        p = Path(p)
        rec = UserFile(p, "clip_benchmark").json(CLIP_BENCHMARK).model_dump()
        base = {"run_id": f"cb-{p.stem}", "timestamp": "", "cliplab_version": "", "command": "clip_benchmark",
                "model": rec["model"], "pretrained": rec["pretrained"] or "", "model_fingerprint": "",
                "dataset": rec["dataset"], "split": rec["split"], "dataset_fingerprint": "",
                "ci_low": None, "ci_high": None, "seed": None, "n": None, "config": json.dumps({"file": str(p)}),
                "artifact": None}
        convert = {s.from_clip_benchmark[0]: s.from_clip_benchmark[1] for s in sections() if s.from_clip_benchmark}
        for k, v in rec["metrics"].items():
            if rec["task"] in convert and isinstance(v, (int, float)) and convert[rec["task"]](k, v):
                rows += [{**base, **row} for row in convert[rec["task"]](k, v)]
            elif isinstance(v, (int, float)):
                rows.append({**base, "task": rec["task"], "variant": "CLIP_benchmark", "metric": k, "value": float(v)})
    return tidy_metrics(pd.DataFrame(rows, columns=COLUMNS))  # the columns read_results gives, to sit beside them


def breakable(name: str) -> Markup:
    """A column name that may wrap after its underscores (``mean_correct_similarity``), so headers do not widen the
    table past the page."""
    return Markup("_<wbr>".join(str(escape(part)) for part in str(name).split("_")))


# ---- the page -------------------------------------------------------------------------------------------------
def build_report(df: pd.DataFrame, out: str | Path, *, title: str = "cliplab report", sources=(),
                 exports: bool = True) -> Path:
    """Render the page; with ``exports`` also write ``<stem>.csv``, ``<stem>.parquet`` and
    ``<stem>-clip_benchmark/*.json`` beside it."""
    if df.empty:
        raise CliplabError("the results store is empty: run a study that writes to a results folder first")
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
            write_json(cb_dir / f"{safe}.json", rec)
        links = {"CSV (all rows)": out.with_suffix(".csv").name, "Parquet (all rows)": out.with_suffix(".parquet").name,
                 "CLIP_benchmark JSON files": cb_dir.name + "/"}
    figures = [Figure(f.title, figure_data_uri(f.figure, MAX_IMAGE_WIDTH, dpi=REPORT_DPI), f.caption)
               for f in report_figures(df)]
    env = jinja2.Environment(loader=jinja2.PackageLoader("cliplab.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters["breakable"] = breakable
    page = env.get_template("report.html.j2").render(
        title=title, sources=[str(s) for s in sources], tables=summary_tables(df), figures=figures,
        images=figure_sets(image_figures(df)), links=links, n_rows=len(df), n_runs=df.run_id.nunique(),
        generated=provenance(), csv_uri="data:text/csv;base64," + base64.b64encode(
            df.to_csv(index=False).encode()).decode() if len(df) < 200_000 else None)
    write_text_atomic(out, page)
    return out
