"""Training on its own: the tiny-shapes recipe learns every attribute for every seed (slow), `cliplab train` never
replaces a model without --force and says which --model to use, and the demo writes only into its own folder."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cliplab.inputs import Inputs, RunOptions
from cliplab.cli import app
from cliplab.cli.manage import DEMO_MARKER, prepare_demo_dir as prepare_output_dir
from cliplab.errors import CliplabError
from cliplab.train.tiny import ensure_tiny_model
from cliplab.models.local import SHIPPED_DIR, find_local_model, list_local_models

runner = CliRunner()

# Per-attribute floors for the 5-seed recipe test: chance + a margin (shape +10, colour +50, size +35, position +60,
# background +45 points). Measured (docs/training.md, seeds 0-4, OMP_NUM_THREADS=1, 200 warm-up steps): min 38.7 /
# 86.8 / 92.0 / 94.1 / 81.7 %, so every floor sits 7-20 points below the worst seed. Position's floor (80 %) fails a
# seed that learned left/right/centre but not top/bottom (about 60 %, the failure of the 50-step warm-up).
SEED_FLOORS = {"shape": 0.20 + 0.10, "color": 1 / 6 + 0.50, "size": 0.50 + 0.35, "position": 0.20 + 0.60,
               "background": 0.20 + 0.45}


@pytest.fixture
def captions(tmp_path):
    """A 16-image caption file (trains in a second or two)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = []
    for i in range(16):
        c = ["red", "blue"][i % 2]
        Image.fromarray((rng.random((64, 64, 3)) * 80 + (150 if c == "red" else 0)).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "captions": [f"a {c} thing.", f"{c}."]}))
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _train(cache, caps, *extra):
    return runner.invoke(app, ["train", "-d", str(caps), "--epochs", "1", "--batch-size", "8", "-q",
                               "--cache-dir", str(cache), *extra])


def test_train_refuses_an_existing_name_without_force(tmp_path, captions):
    cache = tmp_path / "cache"
    res = _train(cache, captions, "--name", "mine")
    assert res.exit_code == 0, res.output
    assert f"use it with: --model mine --cache-dir {cache}" in res.output
    folder = cache / "models" / "mine"
    before = (folder / "open_clip_model.safetensors").read_bytes()
    res = _train(cache, captions, "--name", "mine", "--seed", "1")
    assert res.exit_code == 2 and "error:" in res.output and "--force" in res.output
    assert (folder / "open_clip_model.safetensors").read_bytes() == before  # untouched
    res = _train(cache, captions, "--name", "mine", "--seed", "1", "--force")
    assert res.exit_code == 0, res.output
    assert (folder / "open_clip_model.safetensors").read_bytes() != before
    assert json.loads((folder / "meta.json").read_text())["config"]["seed"] == 1
    assert not [p for p in (cache / "models").iterdir() if p.name.startswith(".")]  # no staging leftovers
    from cliplab.models import open_model

    assert open_model("mine", cache_dir=cache).name == "mine"


def test_train_needs_a_name_and_says_what_it_trains():
    res = runner.invoke(app, ["train", "--help"])
    assert "ResNet" in res.output and "ViT" not in res.output and "--force" in res.output
    res = runner.invoke(app, ["train", "-d", "x.jsonl"])
    assert res.exit_code == 2 and "--name" in res.output


def test_train_output_dir_message_names_the_model_value(tmp_path, captions):
    res = _train(tmp_path / "cache", captions, "--name", "m2", "--output-dir", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    assert f"use it with: --model local-dir:{tmp_path / 'out' / 'm2'}" in res.output
    assert _train(tmp_path / "cache", captions, "--name", "m2", "--output-dir", str(tmp_path / "out")).exit_code == 2


def test_train_never_shadows_the_shipped_model_silently(tmp_path, captions):
    cache = tmp_path / "cache"
    assert find_local_model("tiny-shapes", cache).shipped
    res = _train(cache, captions, "--name", "tiny-shapes")
    assert res.exit_code == 2 and "shipped" in res.output and "--force" in res.output
    assert not (cache / "models" / "tiny-shapes").exists()
    res = _train(cache, captions, "--name", "tiny-shapes", "--force")
    assert res.exit_code == 0, res.output
    assert "instead of the shipped one" in res.output
    found = find_local_model("tiny-shapes", cache)
    assert not found.shipped and found.folder == cache / "models" / "tiny-shapes"
    assert ensure_tiny_model(cache) == found.folder
    assert [m.folder for m in list_local_models(cache) if m.name == "tiny-shapes"] == [found.folder]


def test_a_tiny_shapes_left_in_the_cache_by_older_versions_is_ignored(tmp_path, captions):
    """Older cliplab trained tiny-shapes into the cache on first use; that machine-specific copy must not replace
    the shipped one (and is left in place)."""
    cache = tmp_path / "cache"
    assert _train(cache, captions, "--name", "tiny-shapes", "--force").exit_code == 0
    meta = cache / "models" / "tiny-shapes" / "meta.json"
    data = json.loads(meta.read_text())
    del data["overrides_shipped"]
    meta.write_text(json.dumps(data))
    assert find_local_model("tiny-shapes", cache).folder == SHIPPED_DIR / "tiny-shapes"
    assert meta.exists()


def test_demo_refuses_a_folder_it_did_not_create(tmp_path):
    """`cliplab demo --output-dir .` used to delete ./results."""
    mine = tmp_path / "results" / "keep.txt"
    mine.parent.mkdir()
    mine.write_text("user data")
    res = runner.invoke(app, ["demo", "--output-dir", str(tmp_path), "-q", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 2 and "error:" in res.output and "--output-dir" in res.output
    assert mine.read_text() == "user data"
    assert not (tmp_path / DEMO_MARKER).exists()


def test_demo_output_dir_is_created_marked_and_reused(tmp_path):
    out = prepare_output_dir(tmp_path / "new" / "demo")
    assert (out / DEMO_MARKER).is_file()
    (out / "results").mkdir()
    assert prepare_output_dir(out) == out  # its own folder: reused
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (prepare_output_dir(empty) / DEMO_MARKER).is_file()  # an empty folder holds nothing to lose
    (tmp_path / "file").write_text("x")
    with pytest.raises(CliplabError, match="--output-dir"):
        prepare_output_dir(tmp_path / "file")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_recipe_learns_every_attribute_for_every_seed(trained_cache, tmp_path, seed):
    """The shipped recipe (TINY_CONFIG + TrainConfig defaults, only the seed varies, one CPU thread) learns all five
    attributes."""
    from cliplab.data import open_dataset
    from cliplab.data.shapes import ATTRIBUTE_VALUES
    from cliplab.models import open_model
    from cliplab.prompts import resolve_all
    from cliplab.studies.zeroshot import run_zeroshot
    from cliplab.train import TrainConfig, train_clip

    import torch

    ds = open_dataset("shapes", split="train", cache_dir=trained_cache)
    threads = torch.get_num_threads()
    try:  # one thread, as the spread in docs/training.md was measured (thread count changes the float trajectory)
        folder = train_clip(ds, trained_cache, f"seed{seed}", out_dir=tmp_path,
                            config=TrainConfig(seed=seed, num_threads=1))
    finally:
        torch.set_num_threads(threads)
    model = open_model(f"local-dir:{folder}", cache_dir=trained_cache)
    for attr, floor in SEED_FLOORS.items():
        assert floor >= 1 / len(ATTRIBUTE_VALUES[attr]) + 0.10 - 1e-9  # every floor is at least chance + 10 points
        test = open_dataset(f"shapes:{attr}", split="test", cache_dir=trained_cache)
        acc = run_zeroshot(Inputs.of(model, test, template_sets=resolve_all(["simple"]),
                                     options=RunOptions.of(trained_cache, use_cache=False))
                           ).evaluations[0].result.metrics["acc1"]
        assert acc >= floor, f"seed {seed}, {attr}: {acc:.3f} < {floor:.3f}"
