"""The study contract: every study's result has the same members and they hold what the store, the exports, the
terminal and the report expect; studies print nothing (their progress goes where the caller says)."""
import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from cliplab.data import open_dataset
from cliplab.inputs import Inputs, RunOptions
from cliplab.models import open_model
from cliplab.models.specs import ModelSpec
from cliplab.progress import use
from cliplab.prompts import resolve_all
from cliplab.registry import report_sections
from cliplab.results.result import METRIC_COLUMNS, DatasetInfo, Failure, ModelInfo, StudyResult, Table
from cliplab.studies.attack import AttackParams, run_attack
from cliplab.studies.caption_retrieval import run_retrieval
from cliplab.studies.cluster import ClusterParams, run_cluster
from cliplab.studies.compare import run_compare
from cliplab.studies.image_retrieval import run_similar
from cliplab.studies.inspect import InspectParams, run_inspect
from cliplab.studies.probe import ProbeParams, run_probe
from cliplab.studies.prompts import PromptsParams, run_prompts
from cliplab.studies.search import SearchParams, run_search
from cliplab.studies.zeroshot import run_zeroshot
from recording import Recording


@pytest.fixture(scope="module")
def results(trained_cache):
    cache = trained_cache
    model = open_model("tiny-shapes", cache_dir=cache, device="cpu", precision="fp32")
    color = open_dataset("shapes:color", split="test", limit=120, cache_dir=cache)
    train = open_dataset("shapes:color", split="train", limit=300, cache_dir=cache)
    captions = open_dataset("shapes", split="test", limit=80, cache_dir=cache)
    simple = resolve_all(["simple"])[0]
    image = Path(color.source.id(0))
    options = RunOptions.of(cache)

    def given(ds, sets=(), train=None) -> Inputs:
        return Inputs.of(model, ds, train=train, template_sets=list(sets), options=options)

    progress, printed = Recording(), io.StringIO()
    with use(progress), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        out = {
            "zeroshot": run_zeroshot(given(color, [simple])),
            "prompts": run_prompts(given(color, resolve_all(["simple", "openai-cifar"])), PromptsParams(bootstrap=100)),
            "probe": run_probe(given(color, [simple], train=train), ProbeParams(kshot=(1,), seeds=1, wd=1e-3)),
            "compare": run_compare(Inputs(options, models=[ModelSpec("tiny-shapes")], datasets=[color], fitting=[None],
                                          template_sets=[[simple]])),
            "inspect": run_inspect(given(color, [simple]), InspectParams(images=(image,))),
            "attack": run_attack(given(color, [simple]), AttackParams(n_examples=2)),
            "caption_retrieval": run_retrieval(given(captions)),
            "search": run_search(Inputs(options, models=[model], datasets=[captions]),
                                 SearchParams(query=("a red circle",), k=3)),
            "image_retrieval": run_similar(given(color)),
            "cluster": run_cluster(given(color), ClusterParams(k=(3,))),
        }
    return out, progress, printed.getvalue()


def test_every_study_result_satisfies_the_contract(results, tmp_path):
    out, _, _ = results
    tasks = {s.task for s in report_sections()}
    for name, r in out.items():
        assert isinstance(r, StudyResult), name
        assert r.task in tasks, (name, r.task)  # the report knows how to show every task
        assert r.models and all(isinstance(m, ModelInfo) and m.fingerprint for m in r.models), name
        assert isinstance(r.dataset, DatasetInfo) and r.dataset.name, name
        assert isinstance(r.params, dict) and all(isinstance(f, Failure) for f in r.failures), name
        rows = r.metric_rows()
        assert list(rows.columns) == METRIC_COLUMNS and len(rows) > 0, name
        assert rows["value"].notna().any() and set(rows["model"]) <= {m.name for m in r.models}, name
        s = r.summary()
        assert isinstance(s, str) and s and "\n" not in s, name
        assert all(isinstance(t, (Table, str)) for t in r.tables()) and r.tables(), name
        for t in r.tables():
            if isinstance(t, Table):
                assert all(len(row) == len(t.columns) for row in t.rows), name
        json.dumps(r.record(), default=str)  # the --output document is JSON
        for key, art in r.artifacts().items():
            assert isinstance(art, pd.DataFrame) or callable(getattr(art, "write", None)), (name, key)


def test_studies_print_nothing_and_report_through_the_progress_they_are_given(results):
    out, progress, printed = results
    assert printed == ""  # nothing on stdout or stderr: everything went to the Recording progress
    assert progress.bars  # embedding (and fitting) reported bars to it


def test_figures_are_drawn_only_when_written(results, tmp_path):
    out, _, _ = results
    fig = out["cluster"].artifacts()["grid"]
    assert not list(tmp_path.iterdir())
    written = fig.write(tmp_path / "grid.png")
    assert [p for p, _ in written] == [tmp_path / "grid.png"] and (tmp_path / "grid.png").stat().st_size > 0
    assert all(caption for _, caption in written)


def test_probe_warning_goes_to_the_progress_warning_channel():
    """A probe that did not converge is a warning on the caller's progress (kept on the study), not a print."""
    import warnings
    from types import SimpleNamespace

    from cliplab.studies.probe import _probe_warnings
    from cliplab.tasks.probe import ProbeWarning

    progress, study = Recording(), SimpleNamespace(warnings=[])
    with use(progress), _probe_warnings(study):
        warnings.warn("wd=1e-09: stopped at max_iter", ProbeWarning)
    assert study.warnings == progress.warnings == ["wd=1e-09: stopped at max_iter"]


def test_runs_made_in_the_same_second_read_back_in_the_order_they_were_made(tmp_path):
    """Regression: timestamps had a resolution of one second and ties were broken by the random run id, so of two
    runs made in the same second the report's 'latest run' was either one (a figure test failed 2 runs in 4)."""
    from cliplab.results.store import RunRecorder, read_results

    made = []
    for i in range(12):  # twelve runs within a few milliseconds: the old order was right with probability 1/12!
        rec = RunRecorder("zeroshot")
        rec.add_rows(pd.DataFrame([{"task": "t", "model": "m", "dataset": "d", "variant": "v", "metric": "acc1",
                                    "value": float(i)}]))
        rec.write(tmp_path, fmt="jsonl" if i % 2 else "parquet")
        made.append(rec.run_id)
    df = read_results(tmp_path)
    assert list(dict.fromkeys(df.run_id)) == made
    assert df.value.tolist() == [float(i) for i in range(12)]
