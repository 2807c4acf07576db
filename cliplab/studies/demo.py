"""The offline default: the ``shapes`` dataset, the tiny CLIP trained on it and shipped with the package
(``tiny-shapes``), and a demo that runs every study on it and writes the HTML report."""
from __future__ import annotations

import shutil
from pathlib import Path

from cliplab.errors import CliplabError
from cliplab.train.tiny import DEFAULT_MODEL, ensure_tiny_model

DEMO_TEMPLATE_SETS = ["simple", "bare", "a drawing of a {}.", "openai-cifar", "openai-imagenet-7"]
DEMO_ATTRIBUTES = ["shape", "color", "size", "position", "background"]
DEMO_QUERIES = {"prompt style": ["a photo of a red shape.", "a drawing of a red shape."],
                "noun change": ["a red circle", "a red square"],
                "refinement": ["a shape", "a blue shape", "a large blue shape in the top left"]}
DEMO_MARKER = ".cliplab-demo"  # written into every output folder the demo creates; only such folders are reused


class DemoOutputError(CliplabError):
    """The demo's --output-dir is a folder the demo did not create."""


def prepare_output_dir(output_dir: str | Path) -> Path:
    """Create the demo's output folder (with its marker file), or reuse one the demo created before. Any other
    existing folder is refused: the demo never writes into, or deletes from, a folder it does not own."""
    out = Path(output_dir)
    if out.exists():
        if not out.is_dir():
            raise DemoOutputError(f"--output-dir {out}: exists and is not a folder; pick another --output-dir")
        if not (out / DEMO_MARKER).is_file():
            if any(out.iterdir()):
                raise DemoOutputError(f"--output-dir {out}: this folder exists and was not created by `cliplab demo` "
                                      f"(no {DEMO_MARKER} file); pick another --output-dir, e.g. a new folder name")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / DEMO_MARKER
    if not marker.is_file():
        marker.write_text("this folder was created by `cliplab demo`; the demo replaces its own results/, "
                          "figures/ and report.html here on each run\n")
    return out


def run_demo(cache_dir: str | Path | None = None, quiet: bool = False, output_dir: str | Path = "cliplab-demo",
             report: bool = True) -> Path | None:
    """Zero-shot on every attribute with five template sets, then (with ``report``) a prompt study, probes, caption
    retrieval, search grids, image->image retrieval, clustering and a typographic attack, all recorded in
    ``output_dir/results`` and rendered to ``output_dir/report.html``. Returns the report path."""
    from cliplab.data import load_dataset
    from cliplab.models import load_model
    from cliplab.prompts import resolve_all
    from cliplab.results.store import RunRecorder
    from cliplab.report.tables import render, stdout_console
    from cliplab.studies.zeroshot import run_zeroshot

    out_dir = prepare_output_dir(output_dir)
    ensure_tiny_model(cache_dir, quiet=quiet)
    model = load_model(DEFAULT_MODEL, cache_dir=cache_dir)
    out = stdout_console()
    results = out_dir / "results"
    if results.exists():
        shutil.rmtree(results)  # the demo's own folder (marker checked): the report shows this run only
    rec = RunRecorder("demo zeroshot", {"templates": DEMO_TEMPLATE_SETS})
    for attr in DEMO_ATTRIBUTES:
        ds = load_dataset(f"shapes:{attr}", split="test", cache_dir=cache_dir)
        run = run_zeroshot(model, ds, resolve_all(DEMO_TEMPLATE_SETS), cache_dir, quiet=quiet)
        out.print(render(run.tables()[0]))
        rec.add_result(run)
    if not report:
        return None
    rec.write(results)
    _studies(model, cache_dir, results, out_dir / "figures", quiet)
    from cliplab.report.html import build_report
    from cliplab.results.store import read_results

    path = build_report(read_results(results), out_dir / "report.html", title="cliplab demo · tiny-shapes on shapes",
                        sources=[results])
    out.print(f"report: {path.resolve()}")
    return path


def _studies(model, cache_dir, results: Path, figures: Path, quiet: bool) -> None:
    """The other studies of the demo, each recorded like the CLI records them."""
    from cliplab.attacks import TypographicParams
    from cliplab.data import load_dataset
    from cliplab.embed.descriptors import DescriptorSpec
    from cliplab.progress import console
    from cliplab.prompts import resolve_all
    from cliplab.results import rows
    from cliplab.results.store import RunRecorder
    from cliplab.studies.attack import run_typographic
    from cliplab.studies.cluster import run_cluster
    from cliplab.studies.probe import run_probe
    from cliplab.studies.prompts import run_prompt_study
    from cliplab.studies.caption_retrieval import run_caption_retrieval
    from cliplab.studies.search import Query, run_search
    from cliplab.studies.image_retrieval import run_similar

    def say(msg):
        if not quiet:
            console.print(msg)

    shape_test = load_dataset("shapes:shape", split="test", cache_dir=cache_dir)
    shape_train = load_dataset("shapes:shape", split="train", cache_dir=cache_dir)
    say("prompt study (shape)...")
    study = run_prompt_study(model, shape_test, resolve_all(["simple", "openai-cifar", "a photo of a small {}."]),
                             cache_dir, quiet=quiet, n_boot=1000)
    rec = RunRecorder("demo prompts", {"templates": ["simple", "openai-cifar", "a photo of a small {}."]})
    rec.add_result(study)
    rec.write(results)

    say("linear and k-shot probes (shape)...")
    probe = run_probe(model, shape_train, shape_test, cache_dir, templates=resolve_all(["simple"])[0],
                      kshots=(1, 2, 4, 8, 16), seeds=(0, 1, 2), quiet=quiet)
    rec = RunRecorder("demo probe", {"kshot": [1, 2, 4, 8, 16], "seeds": 3})
    rec.add_result(probe)
    rec.write(results)

    say("caption retrieval and search...")
    captioned = load_dataset("shapes", split="test", cache_dir=cache_dir)
    ret = run_caption_retrieval(model, captioned, cache_dir, quiet=quiet)
    rec = RunRecorder("demo retrieval", {})
    rec.add_result(ret)
    for p, caption in ret.failures_figure().write(figures / "caption-failures.png"):
        rec.add_figure(p, ret, caption)
    rec.write(results)
    queries = [Query(text=q, family=f) for f, qs in DEMO_QUERIES.items() for q in qs]
    search = run_search([model], captioned, queries, cache_dir, k=6, quiet=quiet)
    rec = RunRecorder("demo search", {"queries": DEMO_QUERIES})
    rec.add_result(search)
    for p, caption in search.grids_figure(family=True).write(figures / "search"):
        rec.add_figure(p, search, caption)
    rec.write(results)

    say("image->image retrieval and clustering (colour)...")
    color = load_dataset("shapes:color", split="test", cache_dir=cache_dir)
    rec = RunRecorder("demo similar", {})
    for spec, pca in ((DescriptorSpec("global"), None), (DescriptorSpec("mac"), None), (DescriptorSpec("rmac"), 32)):
        sim = run_similar(model, color, spec, cache_dir, pca_dim=pca, quiet=quiet,
                          variant=spec.pooling + (f" pca={pca}" if pca else ""))
        rec.add_result(sim)
    rec.write(results)
    clusters = run_cluster(model, color, cache_dir, ks=[6, 12], quiet=True)
    rec = RunRecorder("demo cluster", {"k": [6, 12]})
    rec.add_result(clusters)
    for p, caption in clusters.grid_figure().write(figures / "clusters.png"):
        rec.add_figure(p, clusters, caption)
    rec.write(results)

    say("per-image rankings...")
    from cliplab.results.result import DatasetInfo
    from cliplab.studies.inspect import run_inspect

    paths = [Path(color.source.id(i)) for i in range(4)]
    ins = run_inspect(model, paths, cache_dir, classnames=color.classnames, template_set=resolve_all(["simple"])[0],
                      source=DatasetInfo.of(color), topk=6, quiet=True)
    rec = RunRecorder("demo inspect", {"images": [str(p) for p in paths]})
    rec.add_result(ins)
    for p, caption in ins.artifacts()["figures"].write(figures / "inspect"):
        rec.add_figure(p, ins, caption)
    rec.write(results)

    say("typographic attack (position)...")
    position = load_dataset("shapes:position", split="test", cache_dir=cache_dir)
    atk = run_typographic(model, position, resolve_all(["simple"])[0], TypographicParams(), cache_dir, quiet=quiet)
    rec = RunRecorder("demo attack", {"target": "random"})
    rec.add_result(atk)
    for p, _ in atk.artifacts()["examples"].write(figures / "typographic.png"):
        rec.add_figure(p, atk, "typographic attack: original vs attacked")
    rec.write(results)
