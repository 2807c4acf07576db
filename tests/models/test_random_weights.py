"""A model named without weights is randomly initialised: said on every door (a ``warning:`` line, a
``CliplabWarning``), recorded as ``random (seed 0)``, and the same model in every run and process (so its fingerprint,
and the cache keyed by it, hold), without touching the caller's random generator. A study given no model says which
default it used."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.models import open_model
from cliplab.models.openclip import state_dict_identity
from cliplab.progress import CliplabWarning, use
from conftest import TINY_VIT
from recording import Recording

ROOT = Path(__file__).resolve().parents[2]
RANDOM = "random (seed 0)"

LOAD = ("import sys, warnings; warnings.simplefilter('ignore')\n"
        "from cliplab.models import open_model\n"
        "from cliplab.models.openclip import state_dict_identity\n"
        "m = open_model(sys.argv[1], cache_dir=sys.argv[2], backend='torch')\n"
        "print(m.fingerprint, state_dict_identity(m.model), m.pretrained, sep='|')\n")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("random") / "tiny-random.json"
    path.write_text(json.dumps(TINY_VIT))
    return path


def load_in_a_process(config: Path, cache: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-c", LOAD, str(config), str(cache)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split("|")


def test_two_processes_build_the_same_random_model(config, cache_dir):
    first, second = load_in_a_process(config, cache_dir), load_in_a_process(config, cache_dir)
    assert first == second and first[2] == RANDOM
    rec = Recording()
    with use(rec):
        here = open_model(str(config), cache_dir=cache_dir, backend="torch")
    assert len(rec.warnings) == 1 and "randomly initialised (seed 0)" in rec.warnings[0]
    assert [here.fingerprint, state_dict_identity(here.model), here.pretrained] == first


def test_loading_leaves_the_callers_random_generator_alone(config, cache_dir):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    expected = torch.rand(3)
    torch.set_rng_state(state)
    with use(Recording()):
        open_model(str(config), cache_dir=cache_dir, backend="torch")
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(torch.rand(3), expected)


def test_python_warns_and_names_the_weights_random(config, cache_dir):
    with pytest.warns(CliplabWarning, match=r"randomly initialised \(seed 0\).*give pretrained"):
        m = cliplab.load_model(str(config), cache_dir=cache_dir, backend="torch", quiet=True)
    assert m.pretrained == RANDOM and "pretrained='random (seed 0)'" in repr(m)


def test_trained_weights_give_no_warning(tiny_checkpoint, cache_dir, recwarn):
    cfg, ckpt, _ = tiny_checkpoint
    m = cliplab.load_model(str(cfg), str(ckpt), cache_dir=cache_dir, backend="torch", quiet=True)
    assert m.pretrained == str(ckpt)
    assert not [w for w in recwarn if issubclass(w.category, CliplabWarning)]


def test_cli_says_it_in_one_warning_line_and_the_results_say_random(config, trained_cache, tmp_path):
    store, record = tmp_path / "store", tmp_path / "record.json"
    done = subprocess.run([sys.executable, "-m", "cliplab.cli", "zeroshot", "--model", str(config), "--dataset",
                           "shapes", "--limit", "20", "--backend", "torch", "--cache-dir", str(trained_cache),
                           "--results", str(store), "--results-format", "jsonl", "-o", str(record)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    warning_lines = [ln for ln in done.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning_lines) == 1 and "randomly initialised (seed 0)" in warning_lines[0], done.stderr
    assert "--pretrained" in warning_lines[0] and str(config) in warning_lines[0]
    rows = cliplab.read_results(store)
    assert set(rows["pretrained"]) == {RANDOM}
    assert json.loads(record.read_text())["pretrained"] == RANDOM


def test_the_api_result_rows_and_record_say_random(config, trained_cache):
    with pytest.warns(CliplabWarning, match="randomly initialised"):
        r = cliplab.zeroshot(str(config), "shapes", limit=20, backend="torch", cache_dir=trained_cache, quiet=True)
    assert r.models[0].pretrained == RANDOM and r.record()["pretrained"] == RANDOM
    assert set(r.metric_rows()["pretrained"]) == {RANDOM}


def test_a_study_given_no_model_says_it_uses_tiny_shapes(trained_cache):
    for given, says in (({}, True), ({"model": "tiny-shapes"}, False)):
        rec = Recording()
        with use(rec):
            cliplab.zeroshot(dataset="shapes", limit=20, backend="torch", cache_dir=trained_cache, **given)
        named = [n for n in rec.notes if "no model given" in n and "tiny-shapes" in n]
        assert bool(named) == says, rec.notes


def test_the_cli_names_the_default_model_only_when_none_was_given(trained_cache):
    runner = CliRunner()
    base = ["zeroshot", "--dataset", "shapes", "--limit", "20", "--backend", "torch", "--cache-dir",
            str(trained_cache)]
    default = runner.invoke(app, base)
    named = runner.invoke(app, [*base, "--model", "tiny-shapes"])
    assert default.exit_code == 0 and named.exit_code == 0, default.output + named.output
    assert "note: no --model given: used tiny-shapes" in default.output
    assert "no --model given" not in named.output
