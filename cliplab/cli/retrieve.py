"""Retrieval commands: retrieval (caption retrieval), search, similar (image retrieval), cluster."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from cliplab.errors import CliplabError
from cliplab.cli.options import (TABLE_SUFFIXES, BackendOpt, BatchOpt, CacheDirOpt, DataRootOpt, DatasetOpt, DeviceOpt, LimitOpt,
                                 ModelOpt, PrecisionOpt, PretrainedOpt, QuietOpt, ResultsFormatOpt, ResultsOpt,
                                 SplitOpt, WorkersOpt, check_device, check_output, check_results, handle_errors,
                                 parse_ints)
from cliplab.cli.session import ensure_default_model, finish, load_dataset, load_inputs, load_model
from cliplab.progress import console


@handle_errors
def retrieval(
    model: ModelOpt = "tiny-shapes", pretrained: PretrainedOpt = None,
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="captioned images: a caption file "
                                "(.csv/.jsonl), a COCO captions .json, a Karpathy split .json, or shapes."),
    split: Optional[str] = typer.Option(None, "--split", help="Karpathy files: test (default), val, train, all."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="image folder of a COCO/Karpathy JSON "
                                             "(default: guessed from the file's location)."),
    limit: LimitOpt = None,
    ks: str = typer.Option("1,5,10", "--ks", help="recall@k cut-offs."),
    captions_out: Optional[Path] = typer.Option(None, "--captions", help="per-caption ranks and top-5 images "
                                                "(.csv/.parquet/.jsonl)."),
    failures: Optional[Path] = typer.Option(None, "--failures", help="PNG grid of the worst-ranked captions with "
                                            "their true and retrieved images."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results JSON."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, quiet: QuietOpt = False,
):
    """Caption retrieval: text→image and image→text recall@k, median and mean rank (chunked, bounded memory)."""
    from cliplab.studies.caption_retrieval import run_caption_retrieval

    cut = [k for k in parse_ints(ks, "--ks") if k > 0] or [1, 5, 10]
    check_output(captions_out, "--captions", TABLE_SUFFIXES)
    check_output(failures, "--failures", (".png",))
    check_output(output, "--output", (".json",))
    check_results(results, results_format)
    inp = load_inputs(model=model, pretrained=pretrained, dataset=dataset, split=split, data_root=image_root,
                      limit=limit, device=device, precision=precision, backend=backend, cache_dir=cache_dir, quiet=quiet)
    if getattr(inp.dataset, "missing", 0) and not quiet:
        console.print(f"[yellow]{inp.dataset.missing} images listed in {escape(dataset)} are not on disk and were "
                      "left out[/yellow]")
    run = run_caption_retrieval(inp.model, inp.dataset, cache_dir, ks=tuple(cut), device=inp.model.device,
                                batch_size=batch_size, num_workers=workers, quiet=quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "split": inp.dataset.split,
              "limit": limit, "ks": cut}
    finish(run, command="retrieval", config=config,
           files={"captions": captions_out, "failures": failures, "record": output},
           results=results, results_format=results_format, quiet=quiet)


@handle_errors
def search(
    query: Optional[List[str]] = typer.Argument(None, help="text queries (or use --queries / --image)."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="file: one query per line ('# name' starts a "
                                           "query family), or JSON {family: [queries]}."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="query image(s) (image→image search)."),
    plus: Optional[str] = typer.Option(None, "--plus", help="with --image: add this text's embedding "
                                       "(e.g. --image dog.jpg --plus 'in the snow')."),
    minus: Optional[str] = typer.Option(None, "--minus", help="with --image: subtract this text's embedding."),
    text_weight: float = typer.Option(1.0, "--text-weight", help="weight of --plus/--minus texts."),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="repeatable: results side by side "
                                              "(default: tiny-shapes)."),
    pretrained: Optional[List[str]] = typer.Option(None, "--pretrained", "-p", help="repeatable, paired with "
                                                   "--model ('none' for no tag)."),
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="images to search: a folder, a caption file, a "
                                "dataset name (see `cliplab zeroshot --help`)."),
    split: SplitOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = None,
    k: int = typer.Option(8, "--topk", "-k", min=1),
    grids: Optional[Path] = typer.Option(None, "--grids", help="folder for one PNG grid per query (top-k images "
                                         "with scores, one row per model)."),
    index_type: Optional[str] = typer.Option(None, "--index-type", help="flat (exact) | ivf | hnsw: search with a "
                                             "FAISS index instead of exact chunked search."),
    index: Optional[Path] = typer.Option(None, "--index", help="FAISS index file: reused when it matches the "
                                         "model and images, else built and saved here."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="hits as .csv/.parquet/.jsonl."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, quiet: QuietOpt = False,
):
    """Search images by text (or image, or image ± text): top-k with cosine scores, grids, several models."""
    from cliplab.models.specs import model_specs
    from cliplab.studies.search import build_queries, run_search

    check_output(grids, "--grids", folder=True)
    check_output(index, "--index", warn_existing=False)
    check_output(output, "--output", TABLE_SUFFIXES)
    check_results(results, results_format)
    qs = build_queries(query, queries, image, plus, minus)
    specs = model_specs(model or ["tiny-shapes"], pretrained, None)
    check_device(device, precision, backend)
    for s in specs:
        ensure_default_model(s.model, s.pretrained, cache_dir, quiet)
    ds = load_dataset(dataset, split, data_root, limit, None, cache_dir)
    models = [load_model(s.model, s.pretrained, device, precision, cache_dir, backend=backend) for s in specs]
    run = run_search(models, ds, qs, cache_dir, k=k, text_weight=text_weight, index_path=index,
                     index_type=index_type, batch_size=batch_size, num_workers=workers, quiet=quiet)
    config = {"queries": [q.label for q in qs], "dataset": dataset, "k": k, "models": [s.__dict__ for s in specs],
              "index_type": index_type}
    finish(run, command="search", config=config, files={"grids": grids, "hits": output}, results=results,
           results_format=results_format, quiet=quiet)


@handle_errors
def similar(
    model: ModelOpt = "tiny-shapes", pretrained: PretrainedOpt = None,
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="gallery: a folder (class subfolders = labels), "
                                "or any dataset (see `cliplab zeroshot --help`)."),
    split: SplitOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = None,
    descriptor: str = typer.Option("global", "--descriptor", help="global (CLIP embedding) | mac | rmac | gem, "
                                   "the last three from --layer."),
    layer: Optional[str] = typer.Option(None, "--layer", help="module path for mac/rmac/gem (default: "
                                        "visual.layer4 for ResNets, visual.transformer patch tokens for ViTs)."),
    levels: int = typer.Option(3, "--levels", min=1, help="R-MAC scales."),
    gem_p: float = typer.Option(3.0, "--gem-p", min=1.0),
    pca_dim: Optional[int] = typer.Option(None, "--pca-dim", min=1, help="PCA to this many dimensions."),
    whiten: bool = typer.Option(True, "--whiten/--no-whiten", help="whiten with the PCA (when --pca-dim or "
                                "--pca-fit is given)."),
    pca_fit: Optional[str] = typer.Option(None, "--pca-fit", help="learn the PCA(-whitening) on these images (a "
                                          "folder or dataset), not on the gallery."),
    qe: int = typer.Option(0, "--qe", min=0, help="average query expansion with the top N neighbours."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Oxford/Paris ground truth: a folder (*_query.txt, _good, "
                                      "_ok, _junk) or a revisited gnd_*.pkl (easy/hard/junk: Easy, Medium and Hard "
                                      "protocols). mAP and mP@1/5/10 with junk ignored; positives missing from the "
                                      "gallery count as misses. Without --gt, class labels are used."),
    no_crop: bool = typer.Option(False, "--no-crop", help="with --gt: use whole query images, not their boxes."),
    k: int = typer.Option(10, "--topk", "-k", min=1, help="k for mAP@k / P@k and for --query results."),
    query: Optional[List[Path]] = typer.Option(None, "--query", help="query image(s): show their top-k."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="PNG of --query results."),
    index: Optional[Path] = typer.Option(None, "--index", help="save a FAISS flat index of the final descriptors "
                                         "(+ the PCA as INDEX.pca.npz)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results JSON."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, quiet: QuietOpt = False,
):
    """Image→image retrieval: global/MAC/R-MAC/GeM descriptors, PCA-whitening, query expansion, mAP."""
    from cliplab.embed.descriptors import DescriptorSpec
    from cliplab.studies.image_retrieval import run_similar

    check_output(grid, "--grid", (".png",))
    check_output(index, "--index", warn_existing=False)
    check_output(output, "--output", (".json",))
    check_results(results, results_format)
    spec = DescriptorSpec(descriptor, layer, levels, 0.4, gem_p)
    spec.validate()
    for q in query or []:
        if not q.is_file():
            raise CliplabError(f"--query {q}: file not found")
    inp = load_inputs(model=model, pretrained=pretrained, dataset=dataset, split=split, data_root=data_root,
                      limit=limit, device=device, precision=precision, backend=backend, cache_dir=cache_dir, quiet=quiet)
    fit = load_dataset(pca_fit, None, data_root, None, None, cache_dir) if pca_fit else None
    run = run_similar(inp.model, inp.dataset, spec, cache_dir, pca_fit=fit, pca_dim=pca_dim, whiten=whiten, qe=qe,
                      k=k, gt_dir=gt, crop_queries=not no_crop, query_images=query or (), batch_size=batch_size,
                      num_workers=workers, quiet=quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, **spec.__dict__, "pca_dim": pca_dim,
              "whiten": whiten, "pca_fit": pca_fit, "qe": qe, "k": k, "gt": str(gt) if gt else None}
    finish(run, command="similar", config=config, files={"grid": grid if query else None, "record": output,
                                                         "index": index},
           results=results, results_format=results_format, quiet=quiet)


@handle_errors
def cluster(
    model: ModelOpt = "tiny-shapes", pretrained: PretrainedOpt = None, dataset: DatasetOpt = "shapes",
    split: SplitOpt = None, data_root: DataRootOpt = None, limit: LimitOpt = None,
    k: Optional[str] = typer.Option(None, "--k", help="number of clusters, or a comma list to sweep (default: the "
                                    "number of classes, else 10)."),
    pca_dim: Optional[int] = typer.Option(None, "--pca-dim", min=1, help="PCA before clustering."),
    implementation: str = typer.Option("sklearn", "--kmeans", help="k-means implementation: sklearn | faiss."),
    seed: int = typer.Option(0, "--seed"),
    grid: Optional[Path] = typer.Option(None, "--grid", help="PNG of sample images per cluster (for the first k)."),
    per_cluster: int = typer.Option(8, "--per-cluster", min=1),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="assignments as .csv/.parquet/.jsonl."),
    results: ResultsOpt = None, results_format: ResultsFormatOpt = "parquet",
    device: DeviceOpt = None, precision: PrecisionOpt = None, backend: BackendOpt = "auto", cache_dir: CacheDirOpt = None,
    batch_size: BatchOpt = 64, workers: WorkersOpt = None, quiet: QuietOpt = False,
):
    """k-means on image embeddings (optionally after PCA): NMI, ARI and purity against labels, sample grids."""
    from cliplab.studies.cluster import run_cluster
    from cliplab.tasks.clustering import check_implementation

    check_output(grid, "--grid", (".png",))
    check_output(output, "--output", TABLE_SUFFIXES)
    check_results(results, results_format)
    check_implementation(implementation)
    ks = parse_ints(k, "--k") if k else None
    inp = load_inputs(model=model, pretrained=pretrained, dataset=dataset, split=split, data_root=data_root,
                      limit=limit, device=device, precision=precision, backend=backend, cache_dir=cache_dir, quiet=quiet)
    run = run_cluster(inp.model, inp.dataset, cache_dir, ks=ks, pca_dim=pca_dim, implementation=implementation, seed=seed,
                      per_cluster=per_cluster, batch_size=batch_size, num_workers=workers, quiet=quiet)
    config = {"model": model, "pretrained": pretrained, "dataset": dataset, "k": run.params["ks"],
              "pca_dim": pca_dim, "kmeans": implementation, "seed": seed}
    finish(run, command="cluster", config=config, files={"grid": grid, "assignments": output}, results=results,
           results_format=results_format, quiet=quiet)


def register(app: typer.Typer) -> None:
    for fn in (retrieval, search, similar, cluster):
        app.command()(fn)
