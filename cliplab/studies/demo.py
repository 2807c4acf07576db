"""The demo: every study on the ``shapes`` data with the shipped tiny CLIP (``tiny-shapes``), as a sequence of
steps. Each step is one or more study results with the figures to keep; ``cliplab demo`` writes them to a results
store like any command (through the same ``finish``) and renders the HTML report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from typing import TYPE_CHECKING

from cliplab.embed.descriptors import DescriptorSpec
from cliplab.inputs import Inputs, RunOptions, as_options, open_dataset
from cliplab.prompts import resolve_all
from cliplab.results.result import DatasetInfo, Figure
from cliplab.studies.attack import run_attack
from cliplab.studies.caption_retrieval import run_retrieval
from cliplab.studies.cluster import ClusterParams, run_cluster
from cliplab.studies.image_retrieval import retrieve_similar
from cliplab.studies.inspect import inspect_images
from cliplab.studies.probe import ProbeParams, run_probe
from cliplab.studies.prompts import PromptsParams, run_prompts
from cliplab.studies.search import SearchResult, gallery_index, search_gallery, Query
from cliplab.studies.zeroshot import run_zeroshot

if TYPE_CHECKING:
    from cliplab.models.base import LoadedModel

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


def demo_steps(model: LoadedModel, options: RunOptions | str | Path | None = None,
               zeroshot_only: bool = False) -> Iterator[DemoStep]:
    """The demo's steps, each computed when the caller asks for it: zero-shot on every attribute with five
    template sets, then a prompt study, probes, caption retrieval, search, image retrieval, clustering, per-image
    rankings and a typographic attack."""
    options = as_options(options)

    def data(name: str, split: str = "test"):
        return open_dataset(name, options, split=split)

    def inputs(ds, sets=(), train=None) -> Inputs:
        return Inputs.of(model, ds, train=train, template_sets=resolve_all(list(sets)) if sets else [],
                         options=options)

    yield DemoStep("zero-shot (every attribute)", "demo zeroshot", {"templates": DEMO_TEMPLATE_SETS},
                   [run_zeroshot(inputs(data(f"shapes:{attr}"), DEMO_TEMPLATE_SETS)) for attr in DEMO_ATTRIBUTES],
                   show=True)
    if zeroshot_only:
        return
    shape_test, shape_train = data("shapes:shape"), data("shapes:shape", "train")
    yield DemoStep("prompt study (shape)", "demo prompts", {"templates": PROMPT_SETS},
                   [run_prompts(inputs(shape_test, PROMPT_SETS), PromptsParams(bootstrap=1000))])
    yield DemoStep("linear and k-shot probes (shape)", "demo probe", {"kshot": [1, 2, 4, 8, 16], "seeds": 3},
                   [run_probe(inputs(shape_test, ["simple"], train=shape_train),
                              ProbeParams(kshot=(1, 2, 4, 8, 16), seeds=3))])
    captions = data("shapes")
    ret = run_retrieval(inputs(captions))
    yield DemoStep("caption retrieval", "demo retrieval", {}, [ret],
                   {"failures": (ret.failures_figure(), "caption-failures.png")})
    queries = [Query(text=q, family=f) for f, qs in DEMO_QUERIES.items() for q in qs]
    images = embed_gallery(model, captions, options)
    hits = search_gallery(model, images, gallery_index(model, captions, images), queries, 6, options=options)
    search = SearchResult(captions, queries, [hits], 6)
    yield DemoStep("search", "demo search", {"queries": DEMO_QUERIES}, [search],
                   {"grids": (search.grids_figure(family=True), "search")})
    color = data("shapes:color")
    yield DemoStep("image->image retrieval (colour)", "demo similar", {},
                   [retrieve_similar(model, color, spec, options, pca_dim=pca,
                                     variant=spec.pooling + (f" pca={pca}" if pca else ""))
                    for spec, pca in ((DescriptorSpec("global"), None), (DescriptorSpec("mac"), None),
                                      (DescriptorSpec("rmac"), 32))])
    clusters = run_cluster(inputs(color), ClusterParams(k=(6, 12)))
    yield DemoStep("clustering (colour)", "demo cluster", {"k": [6, 12]}, [clusters],
                   {"grid": (clusters.grid_figure(), "clusters.png")})
    paths = [Path(color.source.id(i)) for i in range(4)]
    ins = inspect_images(model, paths, options, classnames=color.classnames,
                         template_set=resolve_all(["simple"])[0], source=DatasetInfo.of(color), topk=6)
    yield DemoStep("per-image rankings", "demo inspect", {"images": [str(p) for p in paths]}, [ins],
                   {"figures": (ins.artifacts()["figures"], "inspect")})
    atk = run_attack(inputs(data("shapes:position"), ["simple"]))
    yield DemoStep("typographic attack (position)", "demo attack", {"target": "random"}, [atk],
                   {"examples": (captioned(atk.artifacts()["examples"], "typographic attack: original vs attacked"),
                                 "typographic.png")})


def embed_gallery(model, dataset, options):
    from cliplab.embed import embed_images

    return embed_images(model, dataset, options)
