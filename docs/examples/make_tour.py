"""Write docs/examples/tour.ipynb: a tour of cliplab's Python API, every study on the shipped tiny-shapes model.

The notebook is kept in the repository without outputs; tests/test_notebook.py executes it. Edit this script, not
the notebook, and regenerate:

    python docs/examples/make_tour.py

Cells the test inspects carry a tag (cell metadata ``tags``): ``zeroshot``, ``metrics``, ``search``, ``pca``.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).with_name("tour.ipynb")


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str, tag: str | None = None):
    cell = new_code_cell(text.strip())
    if tag:
        cell.metadata["tags"] = [tag]
    return cell


CELLS = [
    md("""
# A tour of cliplab's Python API

Every `cliplab` command is one function call here, with the CLI's defaults and the CLI's numbers. Results show
themselves inline (summary, tables, figures, image grids) and export to DataFrames, JSON, parquet and a results
store. The reference is [docs/api.md](../api.md).

This notebook runs offline on 2 CPU cores in a few minutes: it uses `tiny-shapes` (a tiny CLIP that ships with
cliplab) and `shapes` (synthetic captioned images, generated on first use: 5,000 train + 1,000 test) with small
`limit`s. Point `load_model` / `load_dataset` at your own model and data (`"ViT-B-32", pretrained="openai"`,
`"cifar100"`, a folder of class subfolders, a caption file, ...) and the rest is unchanged.

Everything is cached under `$CLIPLAB_CACHE_DIR` (default: your user cache dir; every function also takes
`cache_dir=`): images are embedded once, and every later study reuses the embeddings.
"""),
    code("""
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

import cliplab

cliplab.__version__
"""),
    md("""
## Model and data

`load_model` takes the CLI's `--model` / `--pretrained` values. `backend="auto"` (the default) runs the towers with
OpenVINO on the CPU when it is installed, PyTorch otherwise. `load_dataset` takes `--dataset` values; `limit=N` is
a seeded random subset. `shapes:ATTRIBUTE` picks the label: `shape`, `color`, `size`, `position`, `background`.
"""),
    code("""
model = cliplab.load_model("tiny-shapes")
test = cliplab.load_dataset("shapes:shape", limit=300)                   # split "test" by default
train = cliplab.load_dataset("shapes:shape", split="train", limit=1000)  # for template selection and probes

print(f"{model.name}: {model.num_params:,} parameters, {model.embed_dim}-d embeddings, backend {model.backend}")
print(f"{test.name}: {len(test)} test / {len(train)} train images, classes {test.classnames}")
"""),
    md("""
## Zero-shot classification

`templates` takes named sets (`"simple"`, `"openai-cifar"`, ...), template strings or files; each is evaluated on
the same image embeddings (here the one-template baseline, CLIP's 18 CIFAR templates as an ensemble, and a template
whose word "small" pulls the tiny model towards the size attribute). The result shows its table and the per-class
accuracy / confusion figure.
"""),
    code("""
r = cliplab.zeroshot(model, test, templates=["simple", "openai-cifar", "a photo of a small {}."])
r
""", tag="zeroshot"),
    md("`r.metrics` is the long-format table the results store keeps (one row per number):"),
    code("""
r.metrics[["variant", "metric", "value", "n"]].head(12)
""", tag="metrics"),
    md("`r.predictions` holds one row per image: the true label, the top-k labels and their scores."),
    code("""
r.predictions.head()
"""),
    md("""
## Prompt study

Every template alone and each set as an ensemble, each tested against the baseline (the first template) with
McNemar's exact test and a paired bootstrap CI. `select=True` picks an ensemble greedily on a validation part of
`select_split` and reports it on the test images.
"""),
    code("""
study = cliplab.prompts(model, test, templates=["simple", "openai-cifar"], select=True, select_split=train,
                        bootstrap=500)
study
"""),
    md("""
## Probes

A linear probe (weight decay chosen on a validation part of `train`) and k-shot probes, each also anchored at the
zero-shot classifier, beside zero-shot.
"""),
    code("""
pr = cliplab.probe(model, test, train=train, kshot=[1, 4], seeds=2)
pr
"""),
    md("""
## Comparing models

Models are given loaded or by name. Offline there is one local model, so this compares `tiny-shapes` run by
PyTorch with the same weights run by the backend loaded above: the numbers agree up to float rounding, the
speed does not.
"""),
    code("""
import dataclasses

# Both models are called "tiny-shapes": a second name tells their rows apart in the table and the store.
torch_model = dataclasses.replace(cliplab.load_model("tiny-shapes", backend="torch"), name="tiny-shapes (torch)")
cmp = cliplab.compare([torch_model, model], ["shapes:shape", "shapes:color"], limit=300)
cmp
"""),
    md("""
## Inspecting single images

A few images drawn here; `inspect` ranks the classes of a dataset (`dataset=`, default `shapes`), your class names
(`classes=`) or your own prompts (`prompts=`) for each. (The tiny model gets the shape right on about 58 % of
`shapes` images, so expect some wrong answers.)
"""),
    code("""
folder = Path("inspect-images")
folder.mkdir(exist_ok=True)
drawings = {"red-circle": ("ellipse", "red"), "blue-square": ("rectangle", "blue"), "yellow-star": ("star", "gold")}
for name, (kind, colour) in drawings.items():
    img = Image.new("RGB", (64, 64), (225, 225, 215))
    d = ImageDraw.Draw(img)
    if kind == "star":
        d.regular_polygon((32, 32, 22), 5, fill=colour)
        d.regular_polygon((32, 32, 22), 5, rotation=36, fill=colour)
    else:
        getattr(d, kind)((14, 14, 50, 50), fill=colour)
    img.save(folder / f"{name}.png")

cliplab.inspect(model, sorted(folder.glob("*.png")), dataset="shapes:shape", topk=3)
"""),
    code("""
cliplab.inspect(model, folder / "red-circle.png",
                prompts=["a red circle", "a blue circle", "a red square", "a photo of a dog"])
"""),
    md("""
## Typographic attack

Writes a wrong class name on each image and measures the accuracy drop and how often the model answers the
written word.
"""),
    code("""
cliplab.attack(model, "shapes:position", limit=200)
"""),
    md("""
## Caption retrieval

`shapes` has ten captions per image: text→image and image→text recall@k.
"""),
    code("""
cliplab.retrieval(model, "shapes", limit=300)
"""),
    md("""
## Search

Text queries against an image set; each query's top-k images as a grid (several models: one row each).
"""),
    code("""
hits = cliplab.search(model, "shapes", ["a red circle", "a small blue square", "a yellow star in the centre"],
                      k=6, limit=500)
hits
""", tag="search"),
    md("""
## Image→image retrieval and clustering

`similar` scores every image as a query against the others (mAP by class); `descriptor="rmac"` pools a feature
map of the image tower instead of the CLIP embedding. `cluster` runs k-means and compares clusters with labels.
"""),
    code("""
cliplab.similar(model, "shapes:color", limit=300)
"""),
    code("""
cliplab.cluster(model, "shapes:color", k=[6, 12], limit=300)
"""),
    md("""
## Your own analysis on the embeddings

`embed` returns the cached image embeddings (an array, or a DataFrame with ids and labels), `embed_texts` the text
embeddings. Here: zero-shot by hand (it gives the `simple` row of `r` above), a leave-one-out nearest-neighbour
classifier, and a PCA of the image embeddings.
"""),
    code("""
emb = cliplab.embed(model, test, frame=True, normalize=True)
X = np.stack(emb.embedding)
y = emb.label.to_numpy()
T = cliplab.embed_texts(model, [f"a photo of a {c}." for c in test.classnames], normalize=True)

by_hand = ((X @ T.T).argmax(1) == y).mean()
from_study = r.metrics.query("variant == 'simple' and metric == 'acc1'").value.iloc[0]
print(f"zero-shot by hand {by_hand:.2%}, from cliplab.zeroshot {from_study:.2%}")

S = X @ X.T
np.fill_diagonal(S, -np.inf)
print(f"1-nearest-neighbour (leave one out) {(y[S.argmax(1)] == y).mean():.2%}")
emb.head(3)
"""),
    code("""
%matplotlib inline
# (cliplab draws its figures with matplotlib's Agg backend; the line above brings back inline plots)
import matplotlib.pyplot as plt

Xc = X - X.mean(0)
_, s, Vt = np.linalg.svd(Xc, full_matrices=False)
P = Xc @ Vt[:2].T
fig, ax = plt.subplots(figsize=(5, 4))
for i, c in enumerate(test.classnames):
    ax.scatter(*P[y == i].T, s=8, label=c)
ax.set(title=f"PCA of tiny-shapes image embeddings ({(s[:2] ** 2).sum() / (s ** 2).sum():.0%} of the variance)",
       xlabel="PC 1", ylabel="PC 2")
ax.legend(fontsize=7);
""", tag="pca"),
    md("""
## Saving and reading results

`.save(folder)` adds a run to a results store (what the CLI's `--results` writes; `cliplab report folder/` turns it
into an HTML report), `cliplab.read_results` reads it back as one DataFrame. `.to_json()` is the CLI's
`--output FILE.json` document, `.to_parquet(path)` the metric rows alone.
"""),
    code("""
store = Path("results")
for result in (r, study, pr, cmp):
    result.save(store)
rows = cliplab.read_results(store)
print(f"{rows.run_id.nunique()} runs, {len(rows)} rows")
(rows[(rows.task == "zeroshot_classification") & (rows.metric == "acc1")]
 .pivot_table(index=["command", "model", "variant"], columns="dataset", values="value"))
"""),
    code("""
import json

doc = json.loads(r.to_json())
{k: doc[k] for k in ("model", "dataset", "task", "metrics")}
"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    nb = build()
    nbformat.validate(nb)
    # Stable cell ids, so regenerating an unchanged script gives an unchanged file.
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    nbformat.write(nb, OUT)
    print(f"wrote {OUT} ({len(nb.cells)} cells)")


if __name__ == "__main__":
    main()
