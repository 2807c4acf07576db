"""Every study on cached embeddings, run warm (issue 23): a second run whose image and text embeddings are all in the
cache loads no model (the model memo, cliplab/models/memo.py) and imports none of the heavy modules it does not need,
and gives exactly the numbers of the cold run that computed them.

One table, one row per study: its CLI arguments and the heavy modules its warm run may import because its own math
needs them -- the probes fit by L-BFGS in torch (cliplab/tasks/probe.py), clustering runs scikit-learn's k-means. No
warm run may build a tower: open_clip, torchvision and OpenVINO are never imported. The ranking studies (caption
retrieval, search by text or image, query studies, image retrieval) rank in numpy on the CPU
(cliplab/tasks/ranking.py, cliplab/tasks/caption_retrieval.py); before, they imported torch for a matrix product
and a top-k. Timing is not tested here: benchmarks/warm_study.py measures it (docs/benchmarks.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fresh_process import cli, python

HEAVY = ("torch", "open_clip", "torchvision", "openvino", "scipy.stats", "sklearn")
TOWERS = ("open_clip", "torchvision", "openvino")  # never imported by a warm run
VARYING = ("timing", "timestamp")  # a record's wall-clock fields
LIMIT = ["--limit", "150"]

# study -> (arguments; {o}: the output path stem, {img}: a query image), the heavy modules its warm run may import
STUDIES = {
    "retrieval": (["retrieval", "-d", "shapes", *LIMIT, "-o", "{o}.json", "--captions", "{o}-captions.csv"], ()),
    "search": (["search", "a red circle", "a large blue square", "-d", "shapes", *LIMIT, "-k", "5", "-o", "{o}.csv"],
               ()),
    "search_image": (["search", "--image", "{img}", "--plus", "red", "-d", "shapes:color", *LIMIT, "-k", "4",
                      "-o", "{o}.csv"], ()),
    "search_euclidean": (["search", "a red circle", "-d", "shapes", *LIMIT, "-k", "5", "--metric", "euclidean",
                          "-o", "{o}.csv"], ()),
    "queries": (["queries", "-d", "shapes", *LIMIT, "-o", "{o}.json"], ()),
    "similar": (["similar", "-d", "shapes:color", *LIMIT, "-o", "{o}.json"], ()),
    "zeroshot": (["zeroshot", "-d", "shapes", *LIMIT, "-o", "{o}.json"], ()),
    "inspect": (["inspect", "{img}", "--classes", "red circle,blue square,green dot", "-o", "{o}.csv"], ()),
    # the math needs them: L-BFGS in torch (no tower: no open_clip), scikit-learn's k-means
    "probe": (["probe", "-d", "shapes:shape", *LIMIT, "--train-limit", "300", "--kshot", "1,4", "--seeds", "2",
               "-o", "{o}.json"], ("torch",)),
    "cluster": (["cluster", "-d", "shapes:color", *LIMIT, "--k", "6", "-o", "{o}.csv"], ("sklearn", "scipy.stats")),
}


def _outputs(folder: Path, stem: str) -> dict[str, object]:
    """What a run wrote (``stem*`` files): JSON records without their wall-clock fields, tables as text."""
    out = {}
    for path in sorted(folder.glob(stem + "*")):
        if path.suffix == ".json":
            record = json.loads(path.read_text())
            out[path.name[len(stem):]] = {k: v for k, v in record.items() if k not in VARYING}
        else:
            out[path.name[len(stem):]] = path.read_text()
    return out


@pytest.fixture(scope="module")
def query_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("warm-query") / "query.png"
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[16:48, 16:48] = (200, 30, 30)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("study", list(STUDIES))
def test_a_warm_study_loads_no_model_and_gives_the_cold_numbers(study, tmp_path, query_image):
    """Regression (issue 23): warm caption retrieval, search, query studies and image retrieval imported torch for
    their ranking; each study's warm run now imports only what its own math needs (the table), never a tower."""
    argv, allowed = STUDIES[study]
    cache = tmp_path / "cache"

    def args(run: str) -> list[str]:
        filled = [a.replace("{o}", str(tmp_path / run)).replace("{img}", str(query_image)) for a in argv]
        return [*filled, "--cache-dir", str(cache), "--backend", "torch", "-q"]

    cold_modules, _ = cli(args("cold"))
    assert "open_clip" in cold_modules  # the cold run loaded the model and computed the embeddings
    warm_modules, err = cli(args("warm"))
    heavy = [m for m in warm_modules if m in HEAVY]
    assert [m for m in heavy if m not in allowed] == [], err
    assert not [m for m in warm_modules if m in TOWERS]
    cold, warm = _outputs(tmp_path, "cold"), _outputs(tmp_path, "warm")
    assert cold and warm.keys() == cold.keys()
    for name in cold:
        assert warm[name] == cold[name], name  # every number exactly equal


def test_warm_api_ranking_studies_import_no_torch(tmp_path):
    """Through the Python API: caption retrieval, search and image retrieval on cached embeddings import no torch
    and give the records of the cold process."""
    cache = tmp_path / "cache"
    code = f"""
        import json, sys
        import cliplab
        kw = dict(limit=150, cache_dir={str(cache)!r}, backend="torch")
        out = {{"retrieval": cliplab.retrieval(dataset="shapes", **kw).record(),
                "search": cliplab.search(dataset="shapes", query=["a red circle", "a blue square"], k=5, **kw).record(),
                "similar": cliplab.similar(dataset="shapes:color", **kw).record()}}
        for r in out.values():
            for k in {VARYING!r}:
                r.pop(k, None)
        print("RESULT " + json.dumps(out, sort_keys=True, default=str))
        print("MODULES " + json.dumps(sorted(sys.modules)))
    """
    cold = python(code).stdout
    warm = python(code).stdout
    modules = json.loads(warm.split("MODULES ", 1)[1])
    assert [m for m in modules if m in HEAVY] == []
    assert warm.split("RESULT ", 1)[1].split("\nMODULES", 1)[0] == cold.split("RESULT ", 1)[1].split("\nMODULES", 1)[0]
