"""The demo: every study on the ``shapes`` data with the shipped tiny CLIP (``tiny-shapes``), as a sequence of
steps. Each step is one or more study results with the figures to keep; ``cliplab demo`` writes them to a results
store like any command (through the same ``finish``) and renders the HTML report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cliplab.attacks import TypographicParams
from cliplab.data import load_dataset
from cliplab.embed.descriptors import DescriptorSpec
from cliplab.models.base import LoadedModel
from cliplab.prompts import resolve_all
from cliplab.results.result import DatasetInfo, Figure
from cliplab.studies.attack import run_typographic
from cliplab.studies.caption_retrieval import run_caption_retrieval
from cliplab.studies.cluster import run_cluster
from cliplab.studies.image_retrieval import run_similar
from cliplab.studies.inspect import run_inspect
from cliplab.studies.probe import run_probe
from cliplab.studies.prompts import run_prompt_study
from cliplab.studies.search import Query, run_search
from cliplab.studies.zeroshot import run_zeroshot

DEMO_TEMPLATE_SETS = ["simple", "bare", "a drawing of a {}.", "openai-cifar", "openai-imagenet-7"]
DEMO_ATTRIBUTES = ["shape", "color", "size", "position", "background"]
DEMO_QUERIES = {"prompt style": ["a photo of a red shape.", "a drawing of a red shape."],
                "noun change": ["a red circle", "a red square"],
                "refinement": ["a shape", "a blue shape", "a large blue shape in the top left"]}
PROMPT_SETS = ["simple", "openai-cifar", "a photo of a small {}."]


@dataclass
class DemoStep:
    """One store entry of the demo: ``command`` and ``config`` as the store records them, the study results, and
    the figures to write (artifact name -> (figure, file name under the demo's figures folder))."""
    title: str
    command: str
    config: dict
    results: list = field(default_factory=list)
    figures: dict[str, tuple[Figure, str]] = field(default_factory=dict)
    show: bool = False  # print the results' tables


def captioned(figure: Figure, caption: str) -> Figure:
    """``figure`` with another caption."""
    def draw(path: Path, limit: int | None = None) -> list[tuple[Path, str]]:
        return [(p, caption) for p, _ in figure.write(path, limit)]

    return Figure(caption, draw, figure.many, figure.model)


def demo_steps(model: LoadedModel, cache_dir: str | Path | None = None, quiet: bool = False,
               zeroshot_only: bool = False) -> Iterator[DemoStep]:
    """The demo's steps, each computed when the caller asks for it: zero-shot on every attribute with five
    template sets, then a prompt study, probes, caption retrieval, search, image retrieval, clustering, per-image
    rankings and a typographic attack."""
    def data(name: str, split: str = "test"):
        return load_dataset(name, split=split, cache_dir=cache_dir)

    yield DemoStep("zero-shot (every attribute)", "demo zeroshot", {"templates": DEMO_TEMPLATE_SETS},
                   [run_zeroshot(model, data(f"shapes:{attr}"), resolve_all(DEMO_TEMPLATE_SETS), cache_dir,
                                 quiet=quiet) for attr in DEMO_ATTRIBUTES], show=True)
    if zeroshot_only:
        return
    shape_test, shape_train = data("shapes:shape"), data("shapes:shape", "train")
    yield DemoStep("prompt study (shape)", "demo prompts", {"templates": PROMPT_SETS},
                   [run_prompt_study(model, shape_test, resolve_all(PROMPT_SETS), cache_dir, quiet=quiet, n_boot=1000)])
    yield DemoStep("linear and k-shot probes (shape)", "demo probe", {"kshot": [1, 2, 4, 8, 16], "seeds": 3},
                   [run_probe(model, shape_train, shape_test, cache_dir, templates=resolve_all(["simple"])[0],
                              kshots=(1, 2, 4, 8, 16), seeds=(0, 1, 2), quiet=quiet)])
    captions = data("shapes")
    ret = run_caption_retrieval(model, captions, cache_dir, quiet=quiet)
    yield DemoStep("caption retrieval", "demo retrieval", {}, [ret],
                   {"failures": (ret.failures_figure(), "caption-failures.png")})
    queries = [Query(text=q, family=f) for f, qs in DEMO_QUERIES.items() for q in qs]
    search = run_search([model], captions, queries, cache_dir, k=6, quiet=quiet)
    yield DemoStep("search", "demo search", {"queries": DEMO_QUERIES}, [search],
                   {"grids": (search.grids_figure(family=True), "search")})
    color = data("shapes:color")
    yield DemoStep("image->image retrieval (colour)", "demo similar", {},
                   [run_similar(model, color, spec, cache_dir, pca_dim=pca, quiet=quiet,
                                variant=spec.pooling + (f" pca={pca}" if pca else ""))
                    for spec, pca in ((DescriptorSpec("global"), None), (DescriptorSpec("mac"), None),
                                      (DescriptorSpec("rmac"), 32))])
    clusters = run_cluster(model, color, cache_dir, ks=[6, 12], quiet=True)
    yield DemoStep("clustering (colour)", "demo cluster", {"k": [6, 12]}, [clusters],
                   {"grid": (clusters.grid_figure(), "clusters.png")})
    paths = [Path(color.source.id(i)) for i in range(4)]
    ins = run_inspect(model, paths, cache_dir, classnames=color.classnames, template_set=resolve_all(["simple"])[0],
                      source=DatasetInfo.of(color), topk=6, quiet=True)
    yield DemoStep("per-image rankings", "demo inspect", {"images": [str(p) for p in paths]}, [ins],
                   {"figures": (ins.artifacts()["figures"], "inspect")})
    atk = run_typographic(model, data("shapes:position"), resolve_all(["simple"])[0], TypographicParams(), cache_dir,
                          quiet=quiet)
    yield DemoStep("typographic attack (position)", "demo attack", {"target": "random"}, [atk],
                   {"examples": (captioned(atk.artifacts()["examples"], "typographic attack: original vs attacked"),
                                 "typographic.png")})
