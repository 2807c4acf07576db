"""Query studies: text->image retrieval with numbers. Four questions people ask of a CLIP model by looking at search
grids, each answered with a number and a confidence interval, per model:

* **Does the prompt style matter?** Every template filled with every class name is a query over the whole labelled
  set (relevant = the images of that class): per query AP, P@k, R-precision, nDCG@k; per template mAP with a CI and
  a paired comparison against a baseline template (the retrieval twin of the prompt study).
* **What does changing the noun do?** For the baseline template, how much of each class query's top-k is another
  class (a retrieval confusion matrix, and its off-diagonal mass: cross-class contamination).
* **Do adjectives refine?** A chain of queries, each adding one attribute ('a red shape' -> 'a small red shape' ->
  'a small red circle'); relevance = the images having every attribute named so far; AP and P@k along the chain,
  each also as lift over its base rate (the share of relevant images), with CIs over the chains.
* **Models side by side:** the same queries on several models: agreement of their top-k (overlap@k, rank-biased
  overlap) and paired differences in AP.

CIs resample the gallery's images (:mod:`cliplab.tasks.query_stats`), the same resample for every query, template
and model, so comparisons are paired; with fewer than six classes the study says that a test over queries could not
be informative. Scores are computed one query block at a time (:func:`cliplab.tasks.ranking.evaluate_rankings`):
never queries x images beyond a chunk.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cliplab.embed import class_text_embeddings, embed_images, embed_texts
from cliplab.errors import ParameterError
from cliplab.inputs import TEXTS, IMAGES, MODELS_P, PRETRAINEDS_P, RUN, TEMPLATES_P, Inputs, Templates
from cliplab.params import param
from cliplab.progress import progress_bar
from cliplab.registry import Output, Study, register
from cliplab.report.notebook import Notebook
from cliplab.report.plots import _plt, image_grid, save_figure
from cliplab.results.exports import TABLE_SUFFIXES
from cliplab.results.result import (DatasetInfo, Failure, Figure, ModelInfo, ReportFigure, ReportSection, Rows,
                                    Table, pct)
from cliplab.tasks.metrics import l2_normalize
from cliplab.tasks.query_stats import (bootstrap_mean, bootstrap_p, percentile_ci, random_ap, resample_weights,
                                       weighted_ap)
from cliplab.tasks.ranking import evaluate_rankings, overlap_at_k, rank_biased_overlap

if TYPE_CHECKING:
    from cliplab.data.base import ImageDataset

TASK = "query_retrieval"
WORK_BUDGET = 4 * 10 ** 9  # queries x images x resamples a run may spend on the CIs (fewer resamples beyond it)
RBO_DEPTH = 100  # top-n lists compared by rank-biased overlap (p = 0.9: the first ~10 ranks weigh most)
BUILTIN_CHAINS = {
    "shapes": {"steps": ["a {color} shape", "a {size} {color} shape", "a {size} {color} {shape}"]},
}


@dataclass(frozen=True)
class QueriesParams:
    """What the query study asks, and how its CIs are made."""
    baseline: str | None = param(None, "template (or template set) every other one is compared with (default: the "
                                 "first).")
    ks: tuple[int, ...] = param((5, 10), "cut-offs for P@k and nDCG@k (the largest also for contamination and "
                                "top-k agreement).", min=1)
    chain: str | None = param(None, "adjective refinement: a chain file (.yaml/.json with 'steps', one template per "
                              "step naming attributes in braces, e.g. 'a {color} {shape}', and optional 'words' "
                              "{attribute: {value: word}}; or .txt, one template per line), or 'shapes' for the "
                              "built-in chain of the shapes data (colour, size, shape).")
    attributes: Path | None = param(None, "CSV of the images' attribute labels for {p:chain} (columns image, "
                                    "attribute, value; image = a path relative to the dataset folder, or a file "
                                    "name); default: the dataset's own attributes (shapes has them).")
    bootstrap: int = param(1000, "resamples of the gallery's images for the CIs.", min=100)
    seed: int = param(0, "the seed of the resamples.")
    examples: int = param(3, "best and worst queries shown as image grids.", min=0)


@dataclass
class Entry:
    """A template (or a template set as an ensemble) whose class-filled queries are evaluated."""
    name: str
    templates: tuple[str, ...]


@dataclass
class ModelRun:
    """One model's queries: per-query metrics and AP resamples (entry -> arrays over classes)."""
    model: object
    images: object
    metrics: dict = field(default_factory=dict)  # entry -> RankingMetrics (one query per class)
    ap_boot: dict = field(default_factory=dict)  # entry -> (C, B) AP under each image resample
    tops: dict = field(default_factory=dict)  # entry -> (C, RBO_DEPTH) gallery positions, best first
    contamination: np.ndarray | None = None  # (C, C) share of class j in the top-k of class i's query (baseline)
    chain: list = field(default_factory=list)  # per step: dict of arrays over chains


@dataclass
class ChainSpec:
    steps: list[str]
    words: dict[str, dict[str, str]]
    attributes: list[list[str]]  # per step: the attributes named so far

    @property
    def all_attributes(self) -> list[str]:
        return self.attributes[-1]


@dataclass(repr=False)
class QueriesResult(Notebook):
    """Template x class queries, noun swaps, adjective chains and model agreement over one labelled image set (the
    study contract: :mod:`cliplab.results.result`)."""
    data: object
    entries: list[Entry]
    baseline: str
    ks: tuple[int, ...]
    runs: list[ModelRun]
    n_boot: int
    chain: ChainSpec | None = None
    chain_queries: list = field(default_factory=list)  # per step: the query texts of each chain
    notes: list[str] = field(default_factory=list)
    examples: int = 3
    seconds: float = 0.0
    task = TASK

    @property
    def models(self) -> list[ModelInfo]:
        return [ModelInfo.of(r.model) for r in self.runs]

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.runs[0].images.indices)))

    @property
    def params(self) -> dict:
        return {"entries": [{"name": e.name, "templates": list(e.templates)} for e in self.entries],
                "baseline": self.baseline, "ks": list(self.ks), "bootstrap": self.n_boot,
                "chain": None if self.chain is None else {"steps": self.chain.steps, "words": self.chain.words}}

    @property
    def failures(self) -> list[Failure]:
        seen: dict[str, Failure] = {}
        for r in self.runs:
            for f in Failure.from_embedding(r.images.failures):
                seen.setdefault(f.id, f)
        return list(seen.values())

    # ---- numbers ----
    def template_stats(self, run: ModelRun, entry: Entry) -> dict:
        """mAP (CI), mP@k, mR-precision, mnDCG@k of an entry, and its paired difference from the baseline."""
        m = run.metrics[entry.name]
        means = m.means()
        boot = np.nanmean(run.ap_boot[entry.name], axis=0)
        out = {"mAP": means["mAP"], "mAP_ci": percentile_ci(boot), "queries": int((m.n_relevant > 0).sum())}
        out.update({f"mP@{k}": means[f"P@{k}"] for k in self.ks})
        out.update({f"mnDCG@{k}": means[f"nDCG@{k}"] for k in self.ks})
        out["mR-precision"] = means["R-precision"]
        if entry.name != self.baseline:
            base = np.nanmean(run.ap_boot[self.baseline], axis=0)
            diff = boot - base
            out["diff"] = means["mAP"] - run.metrics[self.baseline].means()["mAP"]
            out["diff_ci"], out["p"] = percentile_ci(diff), bootstrap_p(diff)
        return out

    def chain_stats(self, run: ModelRun) -> list[dict]:
        """Per chain step: mean AP, P@k, base rate, and the lifts over chance with CIs over the chains (P@k: over the
        base rate, the share of relevant images; AP: over the AP a random ranking scores, which the base rate
        underestimates when few images are relevant)."""
        out = []
        k = max(self.ks)
        for s, step in enumerate(run.chain):
            row = {"step": s, "template": self.chain.steps[s], "chains": int(len(step["ap"])),
                   "base_rate": float(np.mean(step["base"])), "random_AP": float(np.mean(step["base_ap"]))}
            for name, values, chance in (("AP", step["ap"], step["base_ap"]), (f"P@{k}", step["p"], step["base"])):
                lift = values - chance
                row[name] = float(np.mean(values))
                row[f"{name}_lift"] = float(np.mean(lift))
                row[f"{name}_lift_ci"] = percentile_ci(bootstrap_mean(lift, self.n_boot, seed=s))
            out.append(row)
        return out

    def agreement(self) -> list[dict]:
        """Per pair of models and entry: mean overlap@k and RBO of their rankings, and the paired AP difference."""
        out = []
        k = max(self.ks)
        for a, b in combinations(self.runs, 2):
            for e in self.entries:
                ta, tb = a.tops[e.name], b.tops[e.name]
                ov = [overlap_at_k(x, y, k) for x, y in zip(ta, tb)]
                rbo = [rank_biased_overlap(x, y) for x, y in zip(ta, tb)]
                diff_boot = np.nanmean(b.ap_boot[e.name], axis=0) - np.nanmean(a.ap_boot[e.name], axis=0)
                diff = b.metrics[e.name].means()["mAP"] - a.metrics[e.name].means()["mAP"]
                out.append({"models": (a.model.name, b.model.name), "entry": e.name, f"overlap@{k}": float(np.mean(ov)),
                            "RBO": float(np.mean(rbo)), "mAP_diff": diff, "mAP_diff_ci": percentile_ci(diff_boot),
                            "p": bootstrap_p(diff_boot)})
        return out

    def metric_rows(self) -> pd.DataFrame:
        rows = Rows()
        for run in self.runs:
            for e in self.entries:
                st = self.template_stats(run, e)
                kw = dict(task=self.task, model=run.model, dataset=self.data, variant=e.name, n=st["queries"])
                rows.add(metric="mAP", value=st["mAP"], ci=st["mAP_ci"], **kw)
                for key in [f"mP@{k}" for k in self.ks] + [f"mnDCG@{k}" for k in self.ks] + ["mR-precision"]:
                    rows.add(metric=key, value=st[key], **kw)
                if "diff" in st:
                    rows.add(metric="mAP_diff_vs_baseline", value=st["diff"], ci=st["diff_ci"], **kw)
                    rows.add(metric="p_vs_baseline", value=st["p"], **kw)
            if run.contamination is not None:
                off = run.contamination.copy()
                np.fill_diagonal(off, np.nan)
                rows.add(task=self.task, model=run.model, dataset=self.data, variant=f"{self.baseline} (noun swaps)",
                         metric=f"contamination@{max(self.ks)}", value=float(np.nansum(off, axis=1).mean()),
                         n=len(off))
            if self.chain is not None:
                for st in self.chain_stats(run):
                    kw = dict(task=self.task, model=run.model, dataset=self.data,
                              variant=f"chain step {st['step'] + 1}: {st['template']}", n=st["chains"])
                    rows.add(metric="base_rate", value=st["base_rate"], **kw)
                    rows.add(metric="random_AP", value=st["random_AP"], **kw)
                    for name in ("AP", f"P@{max(self.ks)}"):
                        rows.add(metric=name, value=st[name], **kw)
                        rows.add(metric=f"{name}_lift", value=st[f"{name}_lift"], ci=st[f"{name}_lift_ci"], **kw)
        for ag in self.agreement():
            a, b = ag["models"]
            kw = dict(task=self.task, model=ModelInfo(f"{a} vs {b}"), dataset=self.data,
                      variant=f"{ag['entry']} (agreement)")
            for key in (f"overlap@{max(self.ks)}", "RBO"):
                rows.add(metric=key, value=ag[key], **kw)
            rows.add(metric="mAP_diff", value=ag["mAP_diff"], ci=ag["mAP_diff_ci"], **kw)
        return rows.frame()

    def summary(self) -> str:
        run = self.runs[0]
        stats = {e.name: self.template_stats(run, e) for e in self.entries}
        best = max(stats, key=lambda n: stats[n]["mAP"])
        lo, hi = stats[best]["mAP_ci"]
        text = (f"queries {run.model.name} on {self.data.name} ({self.dataset.n} images, {len(self.entries)} "
                f"template(s) x {len(self.data.classnames)} classes): best mAP {pct(stats[best]['mAP'])} % "
                f"[{pct(lo)}, {pct(hi)}] with {best!r}")
        if self.chain is not None:
            lifts = [f"{st['AP_lift']:+.3f}" for st in self.chain_stats(run)]
            text += f"; chain AP lift per step {' / '.join(lifts)}"
        return text

    def tables(self) -> list[Table]:
        ks = self.ks
        cols = ["model", "template", "queries", "mAP %", "95 % CI", "Δ vs baseline", "95 % CI (Δ)", "p",
                *[f"mP@{k} %" for k in ks], "mR-prec %"]
        t = Table(f"text→image queries · {self.data.name} ({self.dataset.n} images; relevant = the query's class)",
                  cols, right=frozenset(cols[2:]), wrap={"template": 40})
        for run in self.runs:
            for e in self.entries:
                st = self.template_stats(run, e)
                lo, hi = st["mAP_ci"]
                diff = st.get("diff")
                dlo, dhi = st.get("diff_ci", (None, None))
                t.rows.append([run.model.name, e.name, str(st["queries"]), pct(st["mAP"]), f"[{pct(lo)}, {pct(hi)}]",
                               "baseline" if diff is None else f"{100 * diff:+.2f}",
                               "" if diff is None else f"[{100 * dlo:+.2f}, {100 * dhi:+.2f}]",
                               "" if diff is None else f"{st['p']:.3g}", *[pct(st[f"mP@{k}"]) for k in ks],
                               pct(st["mR-precision"])])
        t.caption = (f"CIs and p: {self.n_boot} resamples of the gallery's images (paired across templates and "
                     "models)")
        out = [t]
        k = max(ks)
        for run in self.runs:
            if run.contamination is None:
                continue
            names = self.data.classnames
            worst = []
            for i in range(len(names)):
                for j in range(len(names)):
                    if i != j and run.contamination[i, j] > 0:
                        worst.append((run.contamination[i, j], names[i], names[j]))
            worst.sort(reverse=True)
            ct = Table(f"noun swaps · {run.model.name} · '{self.baseline}': the other classes in each query's top-{k}",
                       ["query class", "found instead", f"share of top-{k}"], right=frozenset([f"share of top-{k}"]))
            ct.rows = [[a, b, pct(v)] for v, a, b in worst[:10]]
            off = run.contamination.copy()
            np.fill_diagonal(off, np.nan)
            ct.caption = f"contamination@{k} (mean off-class share) = {pct(float(np.nansum(off, axis=1).mean()))} %"
            out.append(ct)
        if self.chain is not None:
            for run in self.runs:
                cols = ["step", "template", "chains", "base rate %", "AP %", "AP lift", "95 % CI", f"P@{k} %",
                        f"P@{k} lift", "95 % CI "]
                ch = Table(f"adjective chain · {run.model.name}: relevant = images with every attribute named so far",
                           cols, right=frozenset(cols[2:]), wrap={"template": 40})
                for st in self.chain_stats(run):
                    alo, ahi = st["AP_lift_ci"]
                    plo, phi = st[f"P@{k}_lift_ci"]
                    ch.rows.append([str(st["step"] + 1), st["template"], str(st["chains"]), pct(st["base_rate"]),
                                    pct(st["AP"]), f"{st['AP_lift']:+.3f}", f"[{alo:+.3f}, {ahi:+.3f}]",
                                    pct(st[f"P@{k}"]), f"{st[f'P@{k}_lift']:+.3f}", f"[{plo:+.3f}, {phi:+.3f}]"])
                ch.caption = ("lift = the metric minus what a random ranking scores (P@k: the base rate; AP: its exact "
                              "random expectation); 95 % CIs resample the chains")
                out.append(ch)
        ag = self.agreement()
        if ag:
            cols = ["models", "template", f"overlap@{k}", "RBO", "Δ mAP", "95 % CI", "p"]
            at = Table("models side by side: top-k agreement and paired AP differences", cols,
                       right=frozenset(cols[2:]))
            for a in ag:
                lo, hi = a["mAP_diff_ci"]
                at.rows.append([" vs ".join(a["models"]), a["entry"], pct(a[f"overlap@{k}"]), f"{a['RBO']:.3f}",
                                f"{100 * a['mAP_diff']:+.2f}", f"[{100 * lo:+.2f}, {100 * hi:+.2f}]", f"{a['p']:.3g}"])
            out.append(at)
        return out

    def record(self) -> dict:
        return {"task": self.task, "dataset": self.data.name, "split": self.data.split,
                "dataset_fingerprint": self.data.fingerprint, "num_images": self.dataset.n,
                "models": [{"model": m.name, "pretrained": m.pretrained, "model_fingerprint": m.fingerprint}
                           for m in self.models],
                "params": self.params,
                "templates": [{"model": r.model.name, "entry": e.name, **_plain(self.template_stats(r, e))}
                              for r in self.runs for e in self.entries],
                "chain": [{"model": r.model.name, **_plain(st)} for r in self.runs for st in
                          (self.chain_stats(r) if self.chain is not None else [])],
                "agreement": [_plain(a) for a in self.agreement()],
                "notes": list(self.notes)}

    def artifacts(self) -> dict:
        return {"queries": self.queries_frame(), "grids": self.grids_figure()}

    def queries_frame(self) -> pd.DataFrame:
        """One row per model, template and class query: the query text and its AP, P@k, R-precision, nDCG@k."""
        rows = []
        for run in self.runs:
            for e in self.entries:
                m = run.metrics[e.name]
                for c, name in enumerate(self.data.classnames):
                    rows.append({"model": run.model.name, "template": e.name, "class": name,
                                 "query": _fill(e.templates[0], name) if len(e.templates) == 1 else
                                 f"{e.name} ({name})", **m.row(c)})
        return pd.DataFrame(rows)

    def grids_figure(self) -> Figure:
        """The best and worst class queries of the baseline template (first model): their top-k images, relevant
        ones framed green."""
        caption = f"best and worst queries · '{self.baseline}'"

        def draw(folder: Path, limit: int | None = None) -> list[tuple[Path, str]]:
            return self._draw_grids(Path(folder), limit)

        return Figure(caption, draw, many=True)

    def _draw_grids(self, folder: Path, limit: int | None) -> list[tuple[Path, str]]:
        run = self.runs[0]
        m = run.metrics[self.baseline]
        order = np.argsort(m.ap, kind="stable")
        picks = list(dict.fromkeys([*order[::-1][:self.examples], *order[:self.examples]]))[:limit]
        k = max(self.ks)
        labels = self.data.labels[run.images.indices]
        out = []
        for c in picks:
            top = run.tops[self.baseline][c][:k]
            imgs = [self.data.source.load(int(run.images.indices[p])) for p in top]
            ok = [bool(labels[p] == c) for p in top]
            caps = [f"#{j + 1} {self.data.classnames[labels[p]]}" for j, p in enumerate(top)]
            name = self.data.classnames[c]
            title = f"'{_fill(self.baseline, name)}' · AP {m.ap[c]:.3f}" if "{" in self.baseline else \
                f"{self.baseline} ({name}) · AP {m.ap[c]:.3f}"
            fig = image_grid(imgs, caps, cols=k, highlight=ok, title=title)
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "class"
            path = save_figure(fig, [folder / f"{len(out) + 1:02d}-{slug}.png"])[0]
            out.append((path, f"query {title}"))
        return out


def _plain(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _fill(template: str, value: str) -> str:
    return template.replace("{c}", value).replace("{}", value)


def _entries(template_sets) -> list[Entry]:
    """Every template alone, and every set of several templates as an ensemble."""
    out, seen = [], set()
    for ts in template_sets:
        for t in ts.templates:
            if t not in seen:
                seen.add(t)
                out.append(Entry(t, (t,)))
        if len(ts.templates) > 1 and ts.name not in seen:
            seen.add(ts.name)
            out.append(Entry(ts.name, tuple(ts.templates)))
    return out


def read_chain(spec: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """A chain's steps (templates with {attribute} placeholders) and words, from a file or a built-in name."""
    if spec in BUILTIN_CHAINS:
        data = BUILTIN_CHAINS[spec]
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ParameterError("chain", spec, f"not a chain file or a built-in chain ({', '.join(BUILTIN_CHAINS)})")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ParameterError("chain", spec, f"not UTF-8 text (byte {exc.start}); save it as UTF-8",
                                 quote=False) from None
        if path.suffix.lower() == ".txt":
            data = {"steps": [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]}
        else:
            try:
                import yaml

                data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
            except Exception as exc:  # noqa: BLE001 - parser errors of two libraries, reported the same way
                raise ParameterError("chain", spec, f"cannot parse ({type(exc).__name__}: {exc})", quote=False) \
                    from None
    steps = data.get("steps") if isinstance(data, dict) else None
    words = data.get("words", {}) if isinstance(data, dict) else {}
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise ParameterError("chain", spec, "expected 'steps': a list of templates, e.g. ['a {color} shape', "
                             "'a {color} {shape}']", quote=False)
    if not isinstance(words, dict) or not all(isinstance(v, dict) for v in words.values()):
        raise ParameterError("chain", spec, "expected 'words': {attribute: {value: word}}", quote=False)
    return steps, {str(a): {str(k): str(v) for k, v in m.items()} for a, m in words.items()}


def _placeholders(template: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", template)


def chain_labels(dataset, attributes_file: Path | None, names: list[str]) -> dict[str, tuple[np.ndarray, list[str]]]:
    """attribute -> (value index per image, value words) for the chain's attributes: the dataset's own attributes,
    or a CSV (image, attribute, value) matched to the images by relative path or file name."""
    if attributes_file is None:
        have = getattr(dataset, "attributes", {}) or {}
        missing = [a for a in names if a not in have]
        if missing:
            raise ParameterError("chain", None, f"{{p:chain}} names attributes the dataset has no labels for "
                                 f"({', '.join(missing)}; it has {', '.join(sorted(have)) or 'none'}): give them "
                                 "with {p:attributes} FILE.csv", prefix=False)
        words = getattr(dataset, "attribute_values", None) or dataset.attribute_classnames
        return {a: (np.asarray(have[a]), list(words[a])) for a in names}
    try:
        table = pd.read_csv(attributes_file, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ParameterError("attributes", attributes_file, f"cannot read it as a CSV ({exc})", quote=False) from None
    if not {"image", "attribute", "value"} <= set(table.columns):
        raise ParameterError("attributes", attributes_file, "needs the columns image, attribute, value (has "
                             f"{', '.join(table.columns)})", quote=False)
    ids = [dataset.source.id(i) for i in range(len(dataset))]
    by_name: dict[str, list[int]] = {}
    for i, ident in enumerate(ids):
        for key in {ident, Path(ident).name, *(_relative_forms(ident))}:
            by_name.setdefault(key, []).append(i)
    out = {}
    for a in names:
        rows = table[table.attribute == a]
        if rows.empty:
            raise ParameterError("attributes", attributes_file, f"has no rows for the attribute {a!r} that {{p:chain}} "
                                 "names", quote=False)
        values = sorted(set(rows.value))
        idx = np.full(len(dataset), -1, dtype=np.int64)
        for img, val in zip(rows.image, rows.value):
            hits = by_name.get(img) or by_name.get(Path(img).name) or []
            if len(hits) > 1:
                raise ParameterError("attributes", attributes_file, f"image {img!r} names several images of the "
                                     "dataset; give its path relative to the dataset folder", quote=False)
            if hits:
                idx[hits[0]] = values.index(val)
        out[a] = (idx, values)
    return out


def _relative_forms(ident: str) -> list[str]:
    parts = Path(ident).parts
    return ["/".join(parts[i:]) for i in range(1, len(parts))]


def _chain_spec(params: QueriesParams) -> ChainSpec | None:
    if params.chain is None:
        return None
    steps, words = read_chain(params.chain)
    named, attrs = [], []
    for s in steps:
        for a in _placeholders(s):
            if a not in named:
                named.append(a)
        attrs.append(list(named))
    if not named:
        raise ParameterError("chain", params.chain, "its steps name no attribute in braces, e.g. 'a {color} shape'")
    return ChainSpec(steps, words, attrs)


def run_queries(inputs: Inputs, params: QueriesParams = QueriesParams()) -> QueriesResult:
    """Template x class queries (with CIs and a baseline comparison), noun swaps, an optional adjective chain, and
    agreement between models: a :class:`QueriesResult`."""
    dataset, options = inputs.dataset, inputs.options
    dataset.require_classes("template x class queries")
    entries = _entries(inputs.templates)
    names = [e.name for e in entries]
    baseline = params.baseline if params.baseline is not None else names[0]
    if baseline not in names:
        raise ParameterError("baseline", baseline, f"not among the evaluated templates ({'; '.join(names[:6])}"
                             f"{' ...' if len(names) > 6 else ''})")
    chain = _chain_spec(params)
    chain_attrs = chain_labels(dataset, params.attributes, chain.all_attributes) if chain is not None else None
    t0 = time.perf_counter()
    runs: list[ModelRun] = []
    weights = None
    shared = None
    n_boot = params.bootstrap
    for spec in inputs.models:
        m = inputs.open_model(spec)
        images = embed_images(m, dataset, options)
        if shared is None:
            shared = images.indices
            work = len(entries) * len(dataset.classnames) * len(shared) * len(inputs.models)
            n_boot = int(min(params.bootstrap, max(100, WORK_BUDGET // max(work, 1))))
            weights = resample_weights(len(shared), n_boot, params.seed)
        elif not np.array_equal(shared, images.indices):
            raise ParameterError("model", m.name, "embedded another set of images than the first model (images one "
                                 "of them could not read); the comparison needs the same gallery", quote=False)
        runs.append(_model_run(m, images, dataset, entries, baseline, params, weights, options))
        if chain is not None:
            runs[-1].chain = _chain_steps(m, images, chain, chain_attrs, params, options)
    res = QueriesResult(dataset, entries, baseline, tuple(params.ks), runs, n_boot, chain,
                        examples=params.examples)
    if n_boot < params.bootstrap:
        res.notes.append(f"{n_boot} resamples instead of {params.bootstrap}: each resample re-ranks every query over "
                         f"{len(shared)} images, and more would take long; pass a smaller dataset ({{p:limit}}) for "
                         "more")
    if chain is not None:
        res.chain_queries = [[q for q in step["queries"]] for step in runs[0].chain]
    n_classes = len(dataset.classnames)
    if n_classes < 6:
        res.notes.append(f"{n_classes} classes: a test over queries could not reach p < 0.05 (the exact sign test's "
                         f"smallest p with {n_classes} pairs is {2 * 0.5 ** n_classes:.3g}); the CIs and p-values "
                         "resample the gallery's images instead")
    few = int(min(np.bincount(dataset.labels[shared], minlength=n_classes)))
    if few < 10:
        res.notes.append(f"a class has only {few} relevant image(s): its AP moves in large steps, and the "
                         "bootstrap over images is rough")
    res.seconds = time.perf_counter() - t0
    return res


def _model_run(m, images, dataset, entries, baseline, params, weights, options) -> ModelRun:
    """Every entry's class queries on one model: per-query metrics, AP resamples, top lists, contamination."""
    run = ModelRun(m, images)
    G = l2_normalize(images.embeddings)
    labels = dataset.labels[images.indices]
    classes = np.arange(len(dataset.classnames))
    k = max(params.ks)
    texts: dict[str, np.ndarray] = {}
    for e in entries:  # one text pass per template: cached per text
        for t in e.templates:
            if t not in texts:
                from cliplab.prompts import TemplateSet

                texts[t] = l2_normalize(class_text_embeddings(m, dataset.classnames, TemplateSet(t, (t,)),
                                                              options)[:, 0])
    with progress_bar(len(entries) * len(classes), "template x class queries", unit="queries") as bar:
        for e in entries:
            Q = l2_normalize(np.mean([texts[t] for t in e.templates], axis=0))
            run.metrics[e.name] = evaluate_rankings(Q, G, classes, labels, params.ks, normalize=False)
            boots, tops = [], []
            for c in classes:
                s = G @ Q[c]
                order = np.argsort(-s, kind="stable")
                boots.append(_ap_boot(labels[order] == c, weights[:, order]))
                tops.append(order[:RBO_DEPTH])
                bar.advance()
            run.ap_boot[e.name] = np.stack(boots)
            run.tops[e.name] = np.stack(tops)
    top = run.tops[baseline][:, :k]
    share = np.stack([np.bincount(labels[row], minlength=len(classes)) for row in top]).astype(np.float64)
    run.contamination = share / np.maximum(share.sum(axis=1, keepdims=True), 1)
    return run


def _ap_boot(relevant_in_order: np.ndarray, weights_in_order: np.ndarray, budget: int = 2 ** 24) -> np.ndarray:
    """The query's AP under each image resample, in blocks of resamples (bounded memory)."""
    B, n = weights_in_order.shape
    step = max(1, budget // max(n, 1))
    return np.concatenate([weighted_ap(relevant_in_order, weights_in_order[b:b + step]) for b in range(0, B, step)])


def _chain_steps(m, images, chain: ChainSpec, attrs: dict, params: QueriesParams, options) -> list[dict]:
    """Per step: each chain's query, AP, P@k and base rate (relevant = images with every attribute named so far)."""
    k = max(params.ks)
    G = l2_normalize(images.embeddings)
    idx = images.indices
    values = {a: attrs[a][0][idx] for a in chain.all_attributes}
    known = np.all([values[a] >= 0 for a in chain.all_attributes], axis=0)
    combos = sorted({tuple(int(values[a][i]) for a in chain.all_attributes) for i in np.flatnonzero(known)})
    if not combos:
        raise ParameterError("chain", None, "no image has labels for every attribute {p:chain} names", prefix=False)
    steps = []
    for s, template in enumerate(chain.steps):
        named = chain.attributes[s]
        pos = [chain.all_attributes.index(a) for a in named]
        key = {combo: tuple(combo[p] for p in pos) for combo in combos}
        groups = sorted(set(key.values()))
        gid = {g: i for i, g in enumerate(groups)}
        item = np.full(len(idx), -1, dtype=np.int64)  # each image's group at this step (-1: unlabelled)
        tup = np.stack([values[a] for a in named], axis=1)
        lookup = {g: i for i, g in enumerate(groups)}
        for i in np.flatnonzero(known):
            item[i] = lookup.get(tuple(int(v) for v in tup[i]), -1)
        words = {a: [chain.words.get(a, {}).get(w, w) for w in attrs[a][1]] for a in named}
        group_text = [template.format(**{a: words[a][g[j]] for j, a in enumerate(named)}) for g in groups]
        T = l2_normalize(embed_texts(m, group_text, options))
        met = evaluate_rankings(T, G, np.arange(len(groups)), item, (k,), normalize=False)
        q = np.array([gid[key[c]] for c in combos])
        steps.append({"ap": met.ap[q], "p": met.precision[k][q], "base": met.n_relevant[q] / len(idx),
                      "base_ap": random_ap(met.n_relevant[q], len(idx)), "queries": [group_text[i] for i in q]})
    return steps


# ---- how the HTML report shows this task (rows of a results store, any number of runs) ----
def query_figures(df: pd.DataFrame) -> list[ReportFigure]:
    plt = _plt()
    out = []
    rows = df[df.task == TASK]
    maps = rows[(rows.metric == "mAP")]
    if not maps.empty:
        for (model, dataset), g in maps.groupby(["model", "dataset"], sort=False):
            g = g.drop_duplicates("variant", keep="last")
            fig, ax = plt.subplots(figsize=(8, 0.35 * len(g) + 1.4))
            y = np.arange(len(g))
            v = g.value.to_numpy(float) * 100
            lo, hi = g.ci_low.to_numpy(float) * 100, g.ci_high.to_numpy(float) * 100
            ax.errorbar(v, y, xerr=[v - lo, hi - v], fmt="o", capsize=3)
            ax.set_yticks(y, [t if len(t) <= 45 else t[:42] + "..." for t in g.variant], fontsize=8)
            ax.set_xlabel("mAP (%) with 95 % CI")
            ax.grid(alpha=0.3)
            ax.set_title(f"{model} · {dataset}: template x class queries", fontsize=10)
            fig.tight_layout()
            out.append(ReportFigure(f"Query mAP per template: {model} on {dataset}", fig))
    lifts = rows[rows.metric.str.endswith("_lift")]
    if not lifts.empty:
        for (model, dataset), g in lifts.groupby(["model", "dataset"], sort=False):
            fig, ax = plt.subplots(figsize=(8, 3.4))
            for metric, h in g.groupby("metric", sort=False):
                h = h.drop_duplicates("variant", keep="last")
                x = np.arange(len(h))
                v = h.value.to_numpy(float)
                ax.errorbar(x, v, yerr=[v - h.ci_low.to_numpy(float), h.ci_high.to_numpy(float) - v], fmt="o-",
                            capsize=3, label=metric)
                ax.set_xticks(x, [t.split(": ", 1)[-1] for t in h.variant], fontsize=8, rotation=15)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_ylabel("lift over the base rate")
            ax.legend(fontsize=8)
            ax.set_title(f"{model} · {dataset}: do adjectives refine?", fontsize=10)
            fig.tight_layout()
            out.append(ReportFigure(f"Adjective chain: {model} on {dataset}", fig, "each step: the metric minus "
                                    "the share of relevant images, 95 % CI over the chains"))
    return out


REPORT_SECTIONS = [ReportSection(
    TASK, ("mAP", "mP@5", "mP@10", "mR-precision", "mAP_diff_vs_baseline", "p_vs_baseline", "contamination@10",
           "AP_lift", "P@10_lift", "overlap@10", "RBO"),
    rates=r"mAP|mP@\d+|mR-precision|mnDCG@\d+|base_rate|contamination@\d+|overlap@\d+|P@\d+",
    figures=query_figures, order=85)]

STUDY = register(Study(
    "queries", run_queries, "Query studies: text→image retrieval with numbers -- templates, noun swaps, adjective "
    "chains, models side by side.",
    description="Each template filled with each class name is a query over the whole labelled set (relevant = the "
                "images of that class): AP, P@k, R-precision and nDCG@k per query, mAP with a CI per template and a "
                "paired comparison with {p:baseline}; the classes each query finds instead (noun swaps); with "
                "{p:chain}, queries that add one attribute at a time, with their lift over the base rate; with "
                "several {p:model}, their top-k agreement and AP differences. CIs resample the gallery's images.",
    params=QueriesParams,
    inputs=(MODELS_P, PRETRAINEDS_P, *IMAGES, TEMPLATES_P.with_(help="repeatable: templates, named sets or files; every "
                                                               "template is a query family alone, sets of several "
                                                               "also as an ensemble (default: simple + "
                                                               "openai-imagenet-7)."), *RUN, *TEXTS),
    templates=Templates(default=("simple", "openai-imagenet-7")),
    outputs=(Output("output", "record", "study JSON.", (".json",), short="-o"),
             Output("table", "queries", "every query's metrics (.csv/.parquet/.jsonl).", TABLE_SUFFIXES),
             Output("grids", "grids", "folder for the best and worst queries' top-k images.", folder=True)),
    group="Retrieval studies", sections=tuple(REPORT_SECTIONS), order=125,
    returns="``.metrics``; ``.queries_frame()``: one row per query; inline: the tables, the figures and the best and "
            "worst queries' images.",
    example='cliplab.queries("tiny-shapes", "shapes:shape", chain="shapes", quiet=True)'))
