"""Names people type (issue 27): OpenAI's model spellings (``ViT-B/32``) as aliases of open_clip's with the 'openai'
weights, a suggested spelling for an unknown model, and ImageNet-style WordNet-id class folders named from a
shipped map."""
from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.data.classnames import WORDNET_NAMES, wordnet_classnames
from cliplab.models.names import OPENAI_NAMES, openai_alias, suggest
from conftest import make_image
from recording import Recording
from cliplab.progress import use

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# ---- OpenAI's model names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, pretrained, expected", [
    ("ViT-B/32", None, ("ViT-B-32", "openai")),
    ("ViT-B/16", None, ("ViT-B-16", "openai")),
    ("ViT-L/14", None, ("ViT-L-14", "openai")),
    ("ViT-L/14@336px", None, ("ViT-L-14-336", "openai")),
    ("ViT-B/32", "laion2b_s34b_b79k", ("ViT-B-32", "laion2b_s34b_b79k")),  # other weights given: kept
    ("ViT-B/32", "/ckpt/model.pt", ("ViT-B-32", "/ckpt/model.pt")),
    ("RN50x4", None, ("RN50x4", None)),  # also open_clip's name: an architecture, not an alias
    ("ViT-B-32", None, ("ViT-B-32", None)),
    ("tiny-shapes", None, ("tiny-shapes", None)),
])
def test_openai_spellings_are_aliases_with_the_openai_weights(given, pretrained, expected):
    model, weights, said = openai_alias(given, pretrained)
    assert (model, weights) == expected
    assert (said is not None) == (given != expected[0])


def test_every_alias_names_an_open_clip_architecture_with_openai_weights():
    import open_clip

    for spelling, name in OPENAI_NAMES.items():
        assert name in open_clip.list_models(), spelling
        assert "openai" in open_clip.list_pretrained_tags_by_model(name), spelling


@pytest.mark.parametrize("typed, expected", [
    ("vit-b/32", "ViT-B-32"), ("ViT-B32", "ViT-B-32"), ("vit_b_32", "ViT-B-32"), ("ViT-L/14@336", "ViT-L-14-336"),
    ("rn50x4", "RN50x4"), ("ViT-B-23", "ViT-B-32"),
])
def test_an_unknown_spelling_gets_a_suggestion(typed, expected):
    import open_clip

    assert expected in suggest(typed, open_clip.list_models())


def test_nothing_is_suggested_for_a_name_like_no_model():
    import open_clip

    assert suggest("my-very-own-net", open_clip.list_models()) == []


def test_openai_spelling_offline_is_one_error_naming_the_openai_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPLAB_OFFLINE", "1")
    res = runner.invoke(app, ["zeroshot", "-d", "shapes:color", "--limit", "4", "--model", "ViT-B/32",
                              "--backend", "torch", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == res.output.strip().splitlines()[0]  # one line
    assert res.output.startswith("error: cannot get pretrained weights 'openai' for ViT-B-32 (no network")


def test_a_misspelled_model_is_one_error_with_a_suggestion(tmp_path):
    res = runner.invoke(app, ["zeroshot", "-d", "shapes:color", "--limit", "4", "--model", "vit-b/32",
                              "--backend", "torch", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.strip() == ("error: unknown model 'vit-b/32'; did you mean 'ViT-B-32' or 'ViT-B/32'? run "
                                  "`cliplab models` for architecture names, or pass --model CONFIG.json")


def test_an_alias_with_weights_given_loads_them_and_says_so(tiny_checkpoint, tmp_path, monkeypatch):
    """The alias path end to end on a model that exists here: an OpenAI-style spelling mapped to the tiny config."""
    cfg, ckpt, _ = tiny_checkpoint
    monkeypatch.setitem(OPENAI_NAMES, "Tiny/8", str(cfg))
    rec = Recording()
    with use(rec):
        m = cliplab.load_model("Tiny/8", str(ckpt), backend="torch", cache_dir=tmp_path)
    direct = cliplab.load_model(str(cfg), str(ckpt), backend="torch", cache_dir=tmp_path)
    assert m.fingerprint == direct.fingerprint
    assert any("Tiny/8 is OpenAI's name of open_clip's" in n and str(ckpt) in n for n in rec.notes), rec.notes


def test_rn50_without_weights_warns_how_to_get_openais():
    rec = Recording()
    with use(rec):
        cliplab.load_model("RN50", backend="torch")
    assert any("randomly initialised" in w and "(OpenAI's RN50: pretrained openai)" in w for w in rec.warnings), \
        rec.warnings


# ---- WordNet-id class folders ---------------------------------------------------------------------------------

def _folders(root: Path, names: list[str]) -> Path:
    for i, n in enumerate(names):
        make_image(root / n / f"{i}.png", color=(40 * i % 255, 90, 150))
    return root


def test_three_wordnet_folders_take_clips_imagenet_names(tmp_path):
    root = _folders(tmp_path / "set", ["n01440764", "n01443537", "n01484850"])
    rec = Recording()
    with use(rec):
        ds = cliplab.load_dataset(str(root))
    assert ds.classnames == ["tench", "goldfish", "great white shark"]
    assert any("WordNet ids" in n and "'tench'" in n for n in rec.notes), rec.notes


def test_the_zero_shot_prompts_use_the_names(tmp_path, trained_cache):
    root = _folders(tmp_path / "set", ["n01440764", "n01443537"])
    r = cliplab.zeroshot(dataset=str(root), backend="torch", cache_dir=trained_cache, quiet=True)
    assert r.data.classnames == ["tench", "goldfish"]


def test_every_imagenet_1k_id_gets_a_name_of_its_own():
    timm = Path(importlib.util.find_spec("timm").submodule_search_locations[0])
    ids = (timm / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    assert len(ids) == 1000
    rec = Recording()
    with use(rec):
        names = wordnet_classnames(ids)
    assert len(set(names)) == 1000 and not any(n.startswith("n0") or n.startswith("n1") for n in names)
    by_id = dict(zip(ids, names))
    assert by_id["n03773504"] == "missile" and by_id["n04008634"] == "projectile"  # CLIP names both 'missile'
    assert {by_id["n04355933"], by_id["n04356056"]} == {"sunglass", "sunglasses"}
    assert not rec.warnings


@pytest.mark.parametrize("folders, expected, warned", [
    (["n01440764", "n99999999"], ["tench", "n99999999"], True),  # not in the map: id kept, said
    (["n01440764", "goldfish"], None, False),  # not all ids: the usual cleaning
    (["n0144076", "n01443537"], None, False),  # 7 digits: not a WordNet id
    (["n02012849", "n03126707"], ["crane bird", "construction crane"], False),  # CLIP names them apart
])
def test_only_folders_that_are_all_wordnet_ids_are_mapped(folders, expected, warned):
    rec = Recording()
    with use(rec):
        got = wordnet_classnames(folders)
    assert got == expected
    assert bool(rec.warnings) == warned


def test_two_ids_without_another_lemma_are_told_apart_by_their_ids(monkeypatch):
    import cliplab.data.classnames as cn

    monkeypatch.setattr(cn, "_wordnet", lambda: {"n00000001": ["bat"], "n00000002": ["bat"], "n00000003": ["owl"]})
    assert wordnet_classnames(["n00000001", "n00000002", "n00000003"]) == ["bat (n00000001)", "bat (n00000002)",
                                                                            "owl"]


def test_a_classnames_file_overrides_the_map(tmp_path):
    root = _folders(tmp_path / "set", ["n01440764", "n01443537"])
    names = tmp_path / "names.txt"
    names.write_text("fish one\nfish two\n")
    assert cliplab.load_dataset(str(root), classnames=str(names)).classnames == ["fish one", "fish two"]


def test_the_shipped_map_is_what_the_tool_writes(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_wordnet_names
    finally:
        sys.path.pop(0)
    make_wordnet_names.main(tmp_path / "names.tsv.gz")
    assert gzip.decompress((tmp_path / "names.tsv.gz").read_bytes()) == gzip.decompress(WORDNET_NAMES.read_bytes())
