"""The model memo (cliplab/models/memo.py): a study whose embeddings are all cached answers without torch, with the
numbers of the run that computed them; a changed model file is loaded again; an uncached item loads the model."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cliplab.inputs import RunOptions, open_model
from cliplab.models.memo import LazyModel
from fresh_process import cli, python

HEAVY = ("torch", "open_clip", "torchvision", "openvino", "scipy.stats", "sklearn")
VARYING = ("timing", "timestamp")  # a record's wall-clock fields


def _cli_run(args: list[str]) -> tuple[dict, list[str], str]:
    """Run the CLI in a fresh process: (the --output record, the modules loaded at the end, stderr)."""
    modules, err = cli(args)
    record_path = args[args.index("-o") + 1]
    return json.loads(Path(record_path).read_text()), modules, err


def _same_record(cold: dict, warm: dict) -> None:
    strip = lambda d: {k: v for k, v in d.items() if k not in VARYING}  # noqa: E731
    assert strip(warm) == strip(cold)  # every number exactly equal (JSON floats: repr round-trips)


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m in HEAVY]


def test_warm_prompt_study_imports_no_torch_and_gives_the_cold_numbers(tmp_path):
    cache = tmp_path / "cache"
    args = ["prompts", "-d", "shapes", "--limit", "300", "-t", "openai-imagenet-7", "--cache-dir", str(cache), "-q"]
    cold, cold_modules, _ = _cli_run([*args, "-o", str(tmp_path / "cold.json")])
    assert "torch" in cold_modules  # the first run computed the embeddings
    warm, warm_modules, err = _cli_run([*args, "-o", str(tmp_path / "warm.json")])
    assert _heavy(warm_modules) == [], err
    _same_record(cold, warm)
    assert len(warm["rows"]) == 8 and warm["models"][0]["fingerprint"] == cold["model_fingerprint"]


def test_warm_api_studies_import_no_torch(tmp_path):
    """Through the Python API: prompts, zero-shot and compare on cached embeddings load no model and no torch, and
    give the numbers the cold process gave."""
    cache = tmp_path / "cache"
    code = f"""
        import json, sys
        import cliplab
        kw = dict(dataset="shapes", limit=200, cache_dir={str(cache)!r}, backend="torch")
        p = cliplab.prompts(templates=["openai-imagenet-7"], **kw)
        z = cliplab.zeroshot(**kw)
        c = cliplab.compare(**kw)
        out = {{"prompts": p.record(), "zeroshot": z.record(), "compare": c.record()}}
        for r in out.values():
            for k in {VARYING!r}:
                r.pop(k, None)
        print("RESULT " + json.dumps(out, sort_keys=True, default=str))
        print("MODULES " + json.dumps(sorted(sys.modules)))
    """
    cold = python(code, timeout=600).stdout
    warm = python(code, timeout=600).stdout
    modules = json.loads(warm.split("MODULES ", 1)[1])
    assert _heavy(modules) == []
    assert warm.split("RESULT ", 1)[1].split("\nMODULES", 1)[0] == cold.split("RESULT ", 1)[1].split("\nMODULES", 1)[0]


# ---- the memo itself (in this process) ----

def _options(cache: Path, **kw) -> RunOptions:
    return RunOptions.of(cache, backend="torch", **kw)


def test_a_second_load_is_lazy_and_loads_when_needed(tmp_path, tiny_checkpoint):
    cfg, ckpt, _ = tiny_checkpoint
    options = _options(tmp_path)
    first = open_model(str(cfg), str(ckpt), options)
    assert not isinstance(first, LazyModel)
    second = open_model(str(cfg), str(ckpt), options)
    assert isinstance(second, LazyModel) and not second.loaded
    for key in ("fingerprint", "weights_fingerprint", "name", "pretrained", "embed_dim", "preprocess_cfg", "backend",
                "precision", "num_params", "logit_scale", "logit_bias", "image_size"):
        assert getattr(second, key) == getattr(first, key), key
    assert str(second.device) == str(first.device) and second.device.type == first.device.type
    assert second.describe() == first.describe() and repr(second) == repr(first)
    assert not second.loaded  # facts alone load nothing
    texts = ["a photo of a cat", "a dog"]
    assert np.array_equal(second.encode_texts(texts).numpy(), first.encode_texts(texts).numpy())
    assert second.loaded and second.fingerprint == first.fingerprint


def _rewrite(ckpt: Path, seed: int) -> None:
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    g = torch.Generator().manual_seed(seed)
    for v in state["state_dict"].values():
        if v.is_floating_point():
            v.add_(torch.randn(v.shape, generator=g) * 0.01)
    torch.save(state, ckpt)


def test_a_changed_checkpoint_is_loaded_again(tmp_path, tiny_checkpoint):
    """Regression: embeddings cached for a model must never be served for a changed one: a checkpoint whose size or
    mtime changed is loaded again (a new fingerprint), not answered from the memo."""
    import shutil

    cfg, original, _ = tiny_checkpoint
    ckpt = tmp_path / "tiny-vit.pt"
    shutil.copy(original, ckpt)
    options = _options(tmp_path / "cache")
    first = open_model(str(cfg), str(ckpt), options)
    assert isinstance(open_model(str(cfg), str(ckpt), options), LazyModel)
    _rewrite(ckpt, 1)
    changed = open_model(str(cfg), str(ckpt), options)
    assert not isinstance(changed, LazyModel)
    assert changed.fingerprint != first.fingerprint
    again = open_model(str(cfg), str(ckpt), options)
    assert isinstance(again, LazyModel) and again.fingerprint == changed.fingerprint
    os.utime(ckpt)  # touched only: loaded again, the same fingerprint (content-hashed)
    touched = open_model(str(cfg), str(ckpt), options)
    assert not isinstance(touched, LazyModel) and touched.fingerprint == changed.fingerprint


def test_a_change_the_memo_cannot_see_fails_when_the_model_loads(tmp_path, tiny_checkpoint, monkeypatch):
    """A file rewritten with its size and mtime kept (the memo trusts them, as git's index does) is caught when the
    lazy model loads: an error, never embeddings of one model under the other's key; the memo is removed."""
    import shutil

    from cliplab.errors import ModelLoadError
    from cliplab.models import openclip

    monkeypatch.setattr(openclip, "_FILE_HASH_MEMO", {})  # as in a new process (it trusts size and mtime too)

    cfg, original, _ = tiny_checkpoint
    ckpt = tmp_path / "tiny-vit.pt"
    shutil.copy(original, ckpt)
    options = _options(tmp_path / "cache")
    open_model(str(cfg), str(ckpt), options)
    st = os.stat(ckpt)
    _rewrite(ckpt, 2)
    assert os.stat(ckpt).st_size == st.st_size
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    openclip._FILE_HASH_MEMO.clear()
    lazy = open_model(str(cfg), str(ckpt), options)
    assert isinstance(lazy, LazyModel)
    with pytest.raises(ModelLoadError, match="memo is removed"):
        lazy.encode_texts(["a cat"])
    assert not isinstance(open_model(str(cfg), str(ckpt), options), LazyModel)


def test_an_uncached_image_loads_the_model(tmp_path, trained_cache):
    """A warm model meets images the cache does not hold: it loads and embeds them, as the loaded model does."""
    from cliplab.data import open_dataset
    from cliplab.embed import embed_images

    cache = tmp_path / "cache"
    options = _options(cache)
    real = open_model("tiny-shapes", None, options)
    small = open_dataset("shapes", split="test", limit=20, cache_dir=cache)
    embed_images(real, small, options)
    lazy = open_model("tiny-shapes", None, options)
    assert isinstance(lazy, LazyModel)
    assert np.array_equal(embed_images(lazy, small, options).embeddings, embed_images(real, small, options).embeddings)
    assert not lazy.loaded  # all cached
    more = open_dataset("shapes", split="test", limit=40, cache_dir=cache)
    warm = embed_images(lazy, more, options)
    assert lazy.loaded and warm.computed > 0
    expected = embed_images(real, more, options.but(use_cache=False))
    np.testing.assert_allclose(warm.embeddings, expected.embeddings, rtol=1e-5, atol=1e-6)


def test_uncached_texts_load_the_model_and_lengths_are_memoised(tmp_path, trained_cache):
    from cliplab.embed import embed_texts

    options = _options(tmp_path / "cache")
    real = open_model("tiny-shapes", None, options)
    texts = ["a red circle", "a blue square " * 30]  # the second longer than the context: counted
    cold = embed_texts(real, texts, options)
    lazy = open_model("tiny-shapes", None, options)
    assert np.array_equal(embed_texts(lazy, texts, options), cold)
    assert not lazy.loaded  # lengths and embeddings from the memo and the cache
    both = embed_texts(lazy, [*texts, "a green star"], options)
    assert lazy.loaded and np.array_equal(both[:2], cold)


def test_random_weights_are_memoised_with_their_warning(tmp_path):
    """A model built without weights (seeded) is memoised too, and the warm load says the warning again."""
    from cliplab.progress import use
    from recording import Recording

    options = _options(tmp_path)
    with use(Recording()) as first_said:
        first = open_model("RN50", None, options)
    with use(Recording()) as warm_said:
        warm = open_model("RN50", None, options)
    assert isinstance(warm, LazyModel) and warm.fingerprint == first.fingerprint
    assert warm.pretrained == first.pretrained == "random (seed 0)"
    assert warm_said.warnings == first_said.warnings and "randomly initialised" in warm_said.warnings[0]
    with use(Recording()) as loading_said:
        warm.encode_texts(["a cat"])  # loads: the warning is not said twice
    assert loading_said.warnings == []


def test_a_model_trained_into_the_cache_later_replaces_the_memoised_one(tmp_path, tiny_checkpoint):
    """``--model NAME`` resolves through the cache's models folder: a model of that name trained there after the
    memo was written is loaded, not the memoised one."""
    import shutil

    cfg, ckpt, _ = tiny_checkpoint
    cache = tmp_path / "cache"
    folder = cache / "models" / "mine"
    folder.mkdir(parents=True)
    shutil.copy(cfg, folder / "mine.json")
    shutil.copy(ckpt, folder / "mine.pt")
    options = _options(cache)
    first = open_model("mine", None, options)
    assert isinstance(open_model("mine", None, options), LazyModel)
    _rewrite(folder / "mine.pt", 3)
    again = open_model("mine", None, options)
    assert not isinstance(again, LazyModel) and again.fingerprint != first.fingerprint


def test_no_cache_runs_load_the_model(tmp_path, tiny_checkpoint):
    cfg, ckpt, _ = tiny_checkpoint
    options = _options(tmp_path, use_cache=False)
    open_model(str(cfg), str(ckpt), options)
    assert not isinstance(open_model(str(cfg), str(ckpt), options), LazyModel)
    assert not (tmp_path / "model-memo").exists()


def test_a_shipped_model_replaced_in_the_cache_is_loaded_again(tmp_path, tiny_checkpoint, trained_cache):
    """The memo of the shipped tiny-shapes does not answer once a tiny-shapes trained with --force (meta.json:
    overrides_shipped) is in the cache's models folder."""
    import shutil

    cfg, ckpt, _ = tiny_checkpoint
    cache = tmp_path / "cache"
    options = _options(cache)
    shipped = open_model("tiny-shapes", None, options)
    assert isinstance(open_model("tiny-shapes", None, options), LazyModel)
    folder = cache / "models" / "tiny-shapes"
    folder.mkdir(parents=True)
    shutil.copy(cfg, folder / "tiny-shapes.json")
    shutil.copy(ckpt, folder / "tiny-shapes.pt")
    (folder / "meta.json").write_text(json.dumps({"overrides_shipped": True}))
    replaced = open_model("tiny-shapes", None, options)
    assert not isinstance(replaced, LazyModel) and replaced.fingerprint != shipped.fingerprint


def test_a_measurement_note_is_said_by_the_load_that_measured_only(tmp_path, tiny_checkpoint, monkeypatch):
    """Regression (issue 24's new-user try): every warm load of a model replayed the backend calibration's
    "measured ... kept in ..." note and the bf16 note, as if measured again. A note about a measurement taken now
    (``note(..., once=True)``) is said by the load that took it; the model's own notes and warnings are replayed."""
    from cliplab.models import memo
    from cliplab.progress import note, use, warn
    from recording import Recording

    real = memo._load

    def load(*args, **kwargs):
        note("a fact of this model")
        warn("a warning about this model")
        note("measured the tower now", once=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(memo, "_load", load)
    cfg, ckpt, _ = tiny_checkpoint
    options = _options(tmp_path)
    with use(Recording()) as cold:
        open_model(str(cfg), str(ckpt), options)
    assert cold.notes == ["a fact of this model", "measured the tower now"]
    with use(Recording()) as warm:
        lazy = open_model(str(cfg), str(ckpt), options)
    assert isinstance(lazy, LazyModel)
    assert warm.notes == ["a fact of this model"] and warm.warnings == ["a warning about this model"]
    with use(Recording()) as loading:
        lazy.encode_texts(["a cat"])  # the real load: its measurement is new, the model's facts were said already
    assert loading.notes == ["measured the tower now"] and loading.warnings == []
