"""Model facts (cliplab/models/facts.py): backbone and patch, resolution, parameters (against sum(p.numel())),
embedding width, text context and pretraining data, read from the model or its config, never guessed; in
`cliplab models` and compare's tables; compare --plot-top5."""
import json

import pytest
import torch

import cliplab
from cliplab.models.facts import (RANDOM, UNKNOWN, count_architecture_parameters, count_config_parameters, facts_of,
                                  facts_of_config, tag_data)
from cliplab.models.local import shipped_model
from cliplab.progress import use
from conftest import TINY_VIT
from recording import Recording


def numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_tiny_shapes(trained_cache):
    m = cliplab.load_model("tiny-shapes", device="cpu", backend="torch", cache_dir=trained_cache)
    f = facts_of(m)
    assert f.parameters == numel(m.model) == m.num_params
    assert (f.backbone, f.patch_size, f.resolution, f.embed_dim, f.context_length) == ("ModifiedResNet", None, 64, 64,
                                                                                        24)
    assert f.pretraining_data == "shapes:shape"  # its meta.json records it
    cfg = json.loads(shipped_model("tiny-shapes").config.read_text())
    assert count_config_parameters(cfg) == f.parameters  # the config built on the meta device: the same count


def test_random_weight_vit(tiny_checkpoint, tmp_path):
    cfg_path, _, built = tiny_checkpoint
    with use(Recording()):
        m = cliplab.load_model(str(cfg_path), device="cpu", backend="torch", cache_dir=tmp_path)
    f = facts_of(m)
    assert f.parameters == numel(m.model) == numel(built)
    assert (f.backbone, f.patch_size, f.resolution, f.embed_dim, f.context_length) == ("ViT", 16, 64, 32, 16)
    assert f.backbone_text == "ViT /16"
    assert f.pretraining_data == RANDOM
    declared = facts_of_config(TINY_VIT, count_config_parameters(TINY_VIT))
    assert declared.as_dict() == {**f.as_dict(), "pretraining_data": UNKNOWN}


def test_an_architecture_counted_without_weights():
    import open_clip

    name = "cliplab-test-tiny-vit"
    open_clip.factory._MODEL_CONFIGS[name] = TINY_VIT
    try:
        torch.manual_seed(0)
        assert count_architecture_parameters(name) == numel(open_clip.create_model(name))
    finally:
        open_clip.factory._MODEL_CONFIGS.pop(name)


@pytest.mark.parametrize("arch, tag, data", [
    ("ViT-B-32", "openai", "WIT-400M (by its tag name)"),
    ("ViT-B-32", "laion2b_s34b_b79k", "LAION-2B (by its tag name)"),
    ("ViT-B-32", "laion400m_e32", "LAION-400M (by its tag name)"),
    ("ViT-B-32", "datacomp_xl_s13b_b90k", "DataComp-1B (XL pool) (by its tag name)"),
    ("ViT-L-14", "datacomp_xl_s13b_b90k", "DataComp-1B (XL pool) (by its tag name)"),
    ("ViT-B-16", "datacomp_l_s1b_b8k", "DataComp (L pool) (by its tag name)"),
    ("ViT-B-16-SigLIP", "webli", "WebLI (by its tag name)"),
    ("ViT-L-14", "commonpool_xl_clip_s13b_b90k", "CommonPool XL (by its tag name)"),
])
def test_pretraining_data_of_a_tag_is_its_record_else_its_name_said_as_such(arch, tag, data):
    """open_clip's tag configs record no dataset; the zoo's tag names say it by convention: shown, marked as read
    from the name (a longer prefix wins: datacomp_xl is not datacomp's S pool)."""
    assert tag_data(arch, tag) == data


def test_a_tag_whose_name_says_nothing_stays_unknown(monkeypatch):
    import open_clip.pretrained as pre

    monkeypatch.setattr(pre, "get_pretrained_cfg", lambda arch, tag: {})
    assert tag_data("ViT-B-32", "v1") == UNKNOWN and tag_data("ViT-B-32", "my_own_run") == UNKNOWN
    monkeypatch.setattr(pre, "get_pretrained_cfg", lambda arch, tag: {"dataset": "my-1M"})
    assert tag_data("ViT-B-32", "laion2b_s34b_b79k") == "my-1M"  # a record wins over the name


def test_models_command_shows_the_facts(trained_cache):
    from typer.testing import CliRunner

    from cliplab.cli import app

    res = CliRunner().invoke(app, ["models", "--filter", "RN50x4", "--cache-dir", str(trained_cache)],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if "│ RN50x4 " in ln)
    params = count_architecture_parameters("RN50x4") / 1e6
    assert f"ModifiedResNet · 288 px · {params:.2f} M params · dim 640 · context 77" in line
    assert "openai: WIT-400M (by its tag name)" in line
    tiny = next(ln for ln in res.output.splitlines() if "│ tiny-shapes " in ln)
    assert "ModifiedResNet · 64 px · 3.58 M params · dim 64 · context 24" in tiny and "shapes:shape" in tiny
    narrow = CliRunner().invoke(app, ["models", "--filter", "ViT-B-32", "--cache-dir", str(trained_cache)],
                                env={"COLUMNS": "80"})
    assert "…" not in narrow.output  # a narrow terminal folds the cells, never cuts a tag


def test_compare_tables_and_top5_plot(trained_cache, tmp_path, monkeypatch):
    import cliplab.studies.compare as compare

    with use(Recording()):
        res = cliplab.compare("tiny-shapes", "shapes:color", limit=60, cache_dir=trained_cache, quiet=True,
                              plot_top5=True)
    row = res.record()["rows"][0]
    assert (row["backbone"], row["resolution"], row["pretraining_data"]) == ("ModifiedResNet", 64, "shapes:shape")
    facts = [t for t in res.tables() if t.title == "the models compared"][0]
    assert facts.rows[0][:3] == ["tiny-shapes", "ModifiedResNet", "64"]
    drawn = {}
    real = compare.grouped_bars

    def spy(groups, series, **kw):
        drawn.update(series)
        return real(groups, series, **kw)

    monkeypatch.setattr(compare, "grouped_bars", spy)
    res.artifacts()["plot"].draw(tmp_path / "plot")
    assert drawn == {"tiny-shapes · zero-shot top-1": [res.rows[0].acc1],
                     "tiny-shapes · zero-shot top-5": [res.rows[0].acc5]}
    drawn.clear()
    compare.compare_figures(res.rows, tmp_path / "plain")
    assert list(drawn) == ["tiny-shapes"]
