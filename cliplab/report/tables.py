"""Tables for people (rich)."""
from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table


def _pct(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def zeroshot_table(run, title: str | None = None) -> Table:
    n_cls = len(run.dataset.classnames)
    table = Table(title=title or f"zero-shot · {run.model.name} · {run.dataset.name} ({run.dataset.split}, "
                                  f"{len(run.images.indices)} images, {n_cls} classes)")
    table.add_column("templates", no_wrap=True)
    table.add_column("#", justify="right")
    table.add_column("top-1 %", justify="right", no_wrap=True)
    table.add_column(f"top-{min(5, n_cls)} %", justify="right", no_wrap=True)
    table.add_column("mean class recall %", justify="right", no_wrap=True)
    table.add_column("sim(true)", justify="right", no_wrap=True)
    for ev in run.evaluations:
        m = ev.result.metrics
        name = ev.template_set.name if len(ev.template_set.name) <= 40 else ev.template_set.name[:37] + "..."
        table.add_row(name, str(len(ev.template_set.templates)), _pct(m["acc1"]), _pct(m.get("acc5")),
                      _pct(m["mean_per_class_recall"]), f"{m['mean_correct_similarity']:.3f}")
    ips = run.images.images_per_second
    table.caption = (f"chance = {100 / n_cls:.1f} % · images/s = {ips:,.0f}" if not math.isnan(ips) else
                     f"chance = {100 / n_cls:.1f} %") + (f" · skipped {len(run.images.failures)} unreadable images"
                                                          if run.images.failures else "")
    return table


def stdout_console(quiet: bool = False) -> Console:
    """Console for tables on stdout; wide enough for the tables when stdout is a file or pipe."""
    import sys

    return Console(quiet=quiet, width=None if sys.stdout.isatty() else 160)
