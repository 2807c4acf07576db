"""How a study result shows itself outside the CLI: inline in Jupyter (``_repr_html_``: the summary, the study's
tables, the figures the HTML report would draw from its rows, and its own figures and image grids as thumbnails),
as text in a terminal (``repr``), and exported (``to_json``, ``to_parquet``, ``save`` into a results store).

Every study result class mixes in :class:`Notebook`; it needs nothing but the study-result contract
(:mod:`cliplab.results.result`), so the notebook shows what the CLI and the report show, from the same numbers.
"""
from __future__ import annotations

import html
import io
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from rich.console import Console

from cliplab.files import printable, printable_value
from cliplab.io import _json_default, write_text_atomic
from cliplab.progress import NotebookProgress, installed, use
from cliplab.report.plots import figure_data_uri, figure_description, png_data_uri
from cliplab.report.tables import render
from cliplab.results.exports import provenance, write_table
from cliplab.results.result import tidy_metrics
from cliplab.errors import ParameterError
from cliplab.results.store import FORMATS, RunRecorder
from cliplab.registry import sections_for

MAX_FIGURE_FILES = 12  # image files shown inline per figure that writes a folder of them (e.g. one per image)
THUMB_WIDTH = 900  # px: inline figures are downscaled to this and palette-encoded


def _json_value(obj):
    """As the CLI's JSON files write it (numpy numbers as numbers, arrays as lists, paths as text); else as text."""
    try:
        return _json_default(obj)
    except TypeError:
        return str(obj)


def _table_html(table) -> str:
    head = "".join(f"<th style='text-align:{'right' if c in table.right else 'left'}'>{html.escape(c)}</th>"
                   for c in table.columns)
    body = "".join("<tr>" + "".join(
        f"<td style='text-align:{'right' if c in table.right else 'left'}'>{html.escape(str(v))}</td>"
        for c, v in zip(table.columns, row)) + "</tr>" for row in table.rows)
    caption = f"<div style='color:#666;font-size:90%'>{html.escape(table.caption)}</div>" if table.caption else ""
    return (f"<div style='margin:0.6em 0'><b>{html.escape(table.title)}</b>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{caption}</div>")


class Notebook:
    """Display and export for a study result (mixed into every result class; uses only the contract)."""

    # ---- data ----
    @property
    def metrics(self) -> pd.DataFrame:
        """The metric rows in long, tidy format: one row per number (the rows the results store holds for this run,
        without run columns), ``metric``, ``variant``, ``class`` / ``true`` / ``predicted`` (a number of one class, a
        confusion cell), ``value`` (rates as fractions: 0.85, not 85 %) first, then whose numbers they are (task,
        model, dataset); ``metric_name`` is the store's name (``recall[cat]``). :func:`cliplab.read_results` gives the
        same columns."""
        return tidy_metrics(self.metric_rows())

    def to_json(self, path: str | Path | None = None, config: dict | None = None) -> str:
        """The study's JSON document (what the CLI's ``--output FILE.json`` holds: the record, the models, ``config``
        and provenance); written atomically to ``path`` when given. Returns the JSON text."""
        doc = {**self.record(), "models": [asdict(m) for m in self.models], "config": config or self._config(),
               **provenance()}
        # the text written is the text returned; a file name that is not UTF-8 as \xNN
        text = json.dumps(printable_value(doc), indent=2, default=_json_value) + "\n"
        if path is not None:
            self._guard(path, "path")
            write_text_atomic(Path(path), text)
        return text

    def to_parquet(self, path: str | Path) -> Path:
        """The metric rows as a parquet file (atomically; ``.parquet`` is added to a name without it). Returns the
        path written."""
        path = Path(path)
        if path.suffix.lower() != ".parquet":
            path = path.with_name(path.name + ".parquet")
        self._guard(path, "path")
        write_table(path, self.metrics)
        return path

    def save(self, results_dir: str | Path, format: str = "parquet", config: dict | None = None) -> Path:
        """Add this run's rows to a results store folder (a new file, as the CLI's ``--results`` does); read it
        back with :func:`cliplab.read_results` or ``cliplab report``. ``format``: ``"parquet"`` or ``"jsonl"``.
        Returns the file written."""
        if format not in FORMATS:
            raise ParameterError("format", format, f"choose {' or '.join(FORMATS)}")
        if Path(results_dir).exists() and not Path(results_dir).is_dir():
            raise ParameterError("results_dir", results_dir, "exists and is not a folder", quote=False)
        rec = RunRecorder(getattr(self, "command", self.task), config or self._config())
        rec.add_result(self)
        return rec.write(results_dir, format)

    def _guard(self, path, param: str) -> None:
        """An export never writes over a file the run read (a dataset's caption file, a template file, ...)."""
        from cliplab.results import guard

        reads = getattr(self, "input_files", None)
        if reads is not None:
            guard.check([guard.Planned(Path(path), param, Path(path))], reads, replace_warning=False)

    def _config(self) -> dict:
        """The call that made this result (set by the Python API), else the study's parameters."""
        return getattr(self, "config", None) or self.params

    # ---- display ----
    def __repr__(self) -> str:
        # force_jupyter=False: in a kernel rich would display the text itself (Jupyter then showed it twice
        # above the HTML); this only builds the string
        console = Console(record=True, width=120, file=io.StringIO(), markup=False, force_jupyter=False)
        console.print(self.summary(), soft_wrap=True)  # one line, however long (the terminal wraps it)
        for item in self.tables():
            console.print(item if isinstance(item, str) else render(item))
        if self.failures:
            console.print(self._failures_text(), soft_wrap=True)
        return printable(console.export_text().rstrip())  # a file name that is not UTF-8 as \xNN

    def _failures_text(self) -> str:
        first = self.failures[0]
        return (f"{len(self.failures)} input(s) skipped, e.g. {first.id}: {first.reason} (all of them: "
                ".failures)")

    def __str__(self) -> str:
        return self.__repr__()

    def figures(self) -> list[tuple[str, object]]:
        """(title, matplotlib figure) per figure the HTML report draws from this run's rows."""
        rows = self.metrics.assign(run_id="notebook")
        out = []
        for task in dict.fromkeys(rows.task):
            for section in sections_for(task):
                if section.figures is not None:
                    out += [(f.title, f.figure) for f in section.figures(rows[rows.task == task])]
        return out

    def _repr_html_(self) -> str:
        if installed():  # a progress the caller chose gets the drawing's bars
            return self._html()
        with NotebookProgress() as progress, use(progress):  # Jupyter shows it: a bar there, or none
            return self._html()

    def _html(self) -> str:
        parts = [f"<div class='cliplab-result'><p><b>{html.escape(self.summary())}</b></p>"]
        for item in self.tables():
            parts.append(f"<pre>{html.escape(item)}</pre>" if isinstance(item, str) else _table_html(item))
        for title, fig in self.figures():
            parts.append(f"<figure><img src='{figure_data_uri(fig, THUMB_WIDTH, dpi=100)}' style='max-width:100%'/>"
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")
        parts += self._artifact_figures_html()
        if self.failures:
            parts.append(f"<p style='color:#a40'>{html.escape(self._failures_text())}</p>")
        return printable("".join(parts) + "</div>")  # a file name that is not UTF-8 as \xNN

    def _artifact_figures_html(self) -> list[str]:
        """The study's own figures and image grids (drawn into a temporary folder, embedded as thumbnails)."""
        out = []
        with tempfile.TemporaryDirectory(prefix="cliplab-nb-") as tmp:
            for name, obj in self.artifacts().items():
                if not callable(getattr(obj, "draw", None)) or not hasattr(obj, "caption"):
                    continue
                many = getattr(obj, "many", False)
                target = Path(tmp) / (name if many else f"{name}.png")
                # of a folder of figures (e.g. one per image), one more than is shown is drawn: to say there are more
                drawn = obj.write(target, limit=MAX_FIGURE_FILES + 1) if many else obj.write(target)
                written = [(Path(p), c) for p, c in drawn if Path(p).suffix.lower() == ".png"]
                for p, caption in written[:MAX_FIGURE_FILES]:
                    note = figure_description(p)  # e.g. how the images shown were chosen
                    uri = png_data_uri(p.read_bytes(), THUMB_WIDTH)
                    text = html.escape(caption or obj.caption) + (f" — {html.escape(note)}" if note else "")
                    out.append(f"<figure><img src='{uri}' style='max-width:100%'/><figcaption>{text}</figcaption>"
                               "</figure>")
                if len(written) > MAX_FIGURE_FILES:
                    out.append(f"<p>… the first {MAX_FIGURE_FILES} {html.escape(name)} shown; all of them: "
                               f"<code>.artifacts()[{name!r}].write(folder)</code></p>")
        return out
