"""What every command does around its study: load the inputs named by the flags, and finish: print the
tables, write the store, the --output files and the figures."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.markup import escape

from cliplab.cli.options import check_device
from cliplab.errors import CliplabError
from cliplab.progress import console, note

def stdout(quiet: bool):
    from cliplab.report.tables import stdout_console

    return stdout_console(quiet)


def load_model(model, pretrained, device, precision, cache_dir, **options):
    from cliplab.models import load_model as load

    return load(model, pretrained, device=device, precision=precision, cache_dir=cache_dir, **options)


def load_dataset(dataset, split, data_root, limit, classnames, cache_dir, split_flag="--split"):
    from cliplab.data import SplitError, load_dataset

    try:
        return load_dataset(dataset, split=split, data_root=data_root, limit=limit, classnames=classnames,
                            cache_dir=cache_dir)
    except SplitError as exc:
        hint = f" (choose one with {split_flag})" if exc.available else ""
        raise CliplabError(f"{split_flag} {split}: {exc}{hint}") from None


def load_train_set(dataset, split, limit, cache):
    """The split to train on: the one named, else ``train``; a set without splits (a caption file) is used whole."""
    from cliplab.data import SplitError
    from cliplab.data import load_dataset as load_named

    if split is None:
        try:
            return load_named(dataset, split="train", limit=limit, cache_dir=cache)
        except SplitError as exc:
            if exc.available:
                raise CliplabError(f"--split: {exc}; choose the split to train on with --split") from None
    return load_dataset(dataset, split, None, limit, None, cache)


def ensure_default_model(model: str, pretrained: Optional[str], cache_dir, quiet: bool) -> None:
    """``tiny-shapes`` (the offline default) is the checkpoint shipped with cliplab; a note says if a cache copy
    trained with ``train --name tiny-shapes --force`` replaces it."""
    from cliplab.train.tiny import DEFAULT_MODEL, ensure_tiny_model

    if model == DEFAULT_MODEL and pretrained is None:
        ensure_tiny_model(cache_dir, quiet=quiet)


def write_results(rec, results, fmt, quiet) -> None:
    path = rec.write(results, fmt)
    if path is not None:
        stdout(quiet).print(f"added {len(rec.rows)} rows to the results store: {path}")


def report_failures(failures, quiet: bool) -> None:
    """Skipped inputs on stderr (also with --quiet: they change what the numbers mean)."""
    if not failures:
        return
    failures = [(None, f.id, f.reason) if hasattr(f, "reason") else f for f in failures]
    console.print(f"[yellow]skipped {len(failures)} image(s) that could not be used:[/yellow]")
    for _, ident, reason in failures[:20]:
        console.print(f"  {escape(str(ident))}: {escape(str(reason))}")
    if len(failures) > 20:
        console.print(f"  ... and {len(failures) - 20} more (all listed in --output JSON)")


@dataclass
class Inputs:
    """What a command's flags name, loaded: the model, the evaluated split, the split fitted on (if any), the
    template sets (the user's, else the dataset's usual set)."""
    model: Any
    dataset: Any
    train: Any = None
    template_sets: list | None = None


def load_inputs(*, model: str, pretrained: Optional[str], dataset: str, split: Optional[str] = None,
                data_root: Optional[str] = None, limit: Optional[int] = None, classnames: Optional[str] = None,
                device: Optional[str] = None, precision: Optional[str] = None, cache_dir=None, quiet: bool = False,
                templates=None, ensemble: bool = True, default_templates: Optional[Sequence[str]] = None,
                train_split: Optional[str] = None, train_limit: Optional[int] = None,
                train_flag: str = "--train-split", model_options: Optional[dict] = None,
                backend: Optional[str] = "auto") -> Inputs:
    """Check device, precision and templates, then load the dataset (and the split fitted on), the template sets
    and the model, in that order, so a bad flag fails before anything slow."""
    from cliplab.prompts import resolve_all

    values = [templates] if isinstance(templates, str) else list(templates or [])
    user_sets = resolve_all(values, ensemble=ensemble) if values else None
    check_device(device, precision, backend)
    ensure_default_model(model, pretrained, cache_dir, quiet)
    ds = load_dataset(dataset, split, data_root, limit, classnames, cache_dir)
    train = None
    if train_split is not None:
        train = load_dataset(dataset, train_split, data_root, train_limit, classnames, cache_dir, split_flag=train_flag)
    sets = user_sets or resolve_all(list(default_templates or [ds.templates_hint or "simple"]), ensemble=ensemble)
    model_options = {"backend": backend, **(model_options or {})}
    return Inputs(load_model(model, pretrained, device, precision, cache_dir, **model_options), ds, train, sets)


def finish(result, *, command: str, config: dict, files: Optional[dict[str, Optional[Path]]] = None,
           results: Optional[Path] = None, results_format: str = "parquet", quiet: bool = False, show: bool = True,
           artifacts: Optional[dict] = None) -> None:
    """Everything after the study, the same for every study: its tables on stdout (unless not ``show``), skipped
    inputs on stderr, the requested artifacts (``files``: artifact name -> path; ``record`` is the --output JSON;
    ``artifacts`` replaces the result's own), then the store rows."""
    from cliplab.report.tables import render
    from cliplab.results.exports import write_artifact
    from cliplab.results.store import RunRecorder

    out = stdout(not show)
    for item in result.tables() if show else ():
        out.print(item if isinstance(item, str) else render(item))
    report_failures(result.failures, quiet)
    for message in getattr(result, "notes", ()):  # what a person should know about how the numbers were made
        note(message, quiet)
    rec = RunRecorder(command, config)
    rec.add_result(result)
    if artifacts is None:
        artifacts = result.artifacts() if files and any(files.values()) else {}
    for name, path in (files or {}).items():
        if path is None:
            continue
        written = write_artifact(path, result, name, artifacts, config)
        for p, caption in written:
            if caption is not None:
                rec.add_figure(p, result, caption, model=getattr(artifacts.get(name), "model", None))
        many = len(written) > 1 or (name in artifacts and getattr(artifacts[name], "many", False))
        stdout(quiet).print(f"wrote {len(written)} file(s) to {path}" if many else f"wrote {path}")
    write_results(rec, results, results_format, quiet)
