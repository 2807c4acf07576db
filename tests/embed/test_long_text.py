"""Prompts longer than the text tower's context (cliplab/embed/long_text.py): counted and reported once per run
(truncate), or embedded whole as the mean of their windows (windows); hand-computed cases on a random-weight open_clip
model with CLIP's 77-token context, and on a random-weight Hugging Face CLIP built from a config."""
import json

import numpy as np
import pytest

import cliplab
from cliplab.embed import embed_texts, long_text
from cliplab.errors import ParameterError
from cliplab.inputs import RunOptions
from cliplab.progress import CliplabWarning, use
from recording import Recording

# 64 words that CLIP's BPE tokenizer reads as one token each: a prompt of n of them is n + 2 tokens (SOT, EOT)
WORDS = ("red blue green small large circle square photo of the a in on with and top left right bottom middle "
         "dark light bright round sharp tall short wide thin old new big little black white yellow orange purple "
         "pink brown grey gold silver wood stone glass metal paper water fire tree house car dog cat bird fish "
         "horse cow sheep door window road river hill").split()


def prompt(n_tokens: int, shift: int = 0) -> str:
    """A prompt of exactly ``n_tokens`` tokens, SOT and EOT included."""
    return " ".join(WORDS[(shift + i) % len(WORDS)] for i in range(n_tokens - 2))


@pytest.fixture(scope="module")
def model77(tmp_path_factory):
    """tiny-shapes' architecture with CLIP's 77-token context, random weights (seed 0)."""
    from cliplab.models.local import shipped_model

    cfg = json.loads(shipped_model("tiny-shapes").config.read_text())
    cfg["text_cfg"]["context_length"] = 77
    path = tmp_path_factory.mktemp("ctx77") / "ctx77.json"
    path.write_text(json.dumps(cfg))
    with use(Recording()):
        return cliplab.load_model(str(path), device="cpu", backend="torch",
                                  cache_dir=tmp_path_factory.mktemp("cache77"))


def test_the_words_are_one_token_each(model77):
    tok = model77.tokenizer
    assert all(len(tok.encode(w)) == 1 for w in WORDS)
    assert long_text.layout(model77).lengths([prompt(60), prompt(77), prompt(300)]) == [60, 77, 300]


def test_the_warning_counts_the_prompts_cut_60_77_300(model77, tmp_path):
    rec = Recording()
    with use(rec), long_text.one_report():
        embed_texts(model77, [prompt(60), prompt(77), prompt(300)], RunOptions.of(tmp_path))
    # 60 and 77 fit the 77-token context; 300 is cut to 77: 223 tokens cut
    assert len(rec.warnings) == 1
    w = rec.warnings[0]
    assert "1 of 3 prompts is longer than the text context" in w and "(77 tokens)" in w
    assert "the longest has 300 tokens (223 cut)" in w and "223.0 tokens cut on average" in w
    assert "long_text" in w and "windows" in w


def test_one_warning_per_run_over_several_calls(model77, tmp_path):
    rec = Recording()
    with use(rec), long_text.one_report():
        embed_texts(model77, [prompt(60), prompt(78)], RunOptions.of(tmp_path))
        embed_texts(model77, [prompt(300), prompt(78), prompt(10)], RunOptions.of(tmp_path))
    # distinct prompts: 60, 78, 300, 10 -> 2 cut, by 1 and 223 tokens (mean 112.0)
    assert len(rec.warnings) == 1
    assert "2 of 4 prompts are longer" in rec.warnings[0]
    assert "the longest has 300 tokens (223 cut), 112.0 tokens cut on average" in rec.warnings[0]


def test_nothing_cut_nothing_said(model77, tmp_path):
    rec = Recording()
    with use(rec), long_text.one_report():
        embed_texts(model77, [prompt(60), prompt(77)], RunOptions.of(tmp_path))
    assert rec.warnings == [] and rec.notes == []


def test_a_study_run_warns_once_through_the_api(model77, tmp_path):
    rec = Recording()
    with use(rec):
        cliplab.embed_texts(model77, [prompt(300), prompt(100), prompt(300)], cache_dir=tmp_path)
    assert len([w for w in rec.warnings if "longer than the text context" in w]) == 1
    assert "2 of 2 prompts are longer" in rec.warnings[0]  # distinct prompts, counted once
    with pytest.warns(CliplabWarning, match="2 of 2 prompts are longer") as got:  # the notebook's warnings
        cliplab.embed_texts(model77, [prompt(300), prompt(100)], cache_dir=tmp_path)
    assert got[0].filename == __file__  # the caller's line, not contextlib's


def test_windows_is_the_hand_average_of_the_windows(model77, tmp_path):
    text = prompt(300, shift=5)
    words = text.split()  # 298 content tokens: windows of 75, 75, 75 and 73
    chunks = [" ".join(words[i:i + 75]) for i in range(0, 298, 75)]
    assert [len(c.split()) for c in chunks] == [75, 75, 75, 73]
    raw = model77.encode_texts(chunks).numpy().astype(np.float64)  # each window as a prompt of its own
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    hand = unit.mean(axis=0)
    hand /= np.linalg.norm(hand)
    rec = Recording()
    with use(rec), long_text.one_report():
        got = embed_texts(model77, [prompt(20), text], RunOptions.of(tmp_path, long_text="windows"))
    np.testing.assert_allclose(got[1], hand, atol=1e-6)
    # a prompt that fits is embedded as with truncate
    np.testing.assert_allclose(got[0], model77.encode_texts([prompt(20)]).numpy()[0], atol=1e-6)
    assert rec.warnings == [] and len(rec.notes) == 1 and "up to 4 windows" in rec.notes[0]


def test_window_embedding_is_the_mean_of_unit_vectors_renormalised():
    e = np.array([[3.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(long_text.windows_embedding(e), [2 ** -0.5, 2 ** -0.5], atol=1e-7)


def test_the_cache_keys_differ_per_mode(model77, tmp_path):
    texts = [prompt(20), prompt(300, shift=3)]
    opts = RunOptions.of(tmp_path)
    with use(Recording()):
        cut = embed_texts(model77, texts, opts)  # fills the cache with the truncated embeddings
        whole = embed_texts(model77, texts, opts.but(long_text="windows"))
        fresh = embed_texts(model77, texts, opts.but(long_text="windows", use_cache=False))
        again = embed_texts(model77, texts, opts)
    np.testing.assert_allclose(whole, fresh, atol=1e-6)  # not the truncated vector read back
    assert not np.allclose(whole[1] / np.linalg.norm(whole[1]), cut[1] / np.linalg.norm(cut[1]), atol=1e-3)
    np.testing.assert_allclose(again, cut, atol=0)  # the windows entry did not replace the truncated one
    np.testing.assert_allclose(whole[0], cut[0], atol=0)  # a prompt that fits: one embedding, one entry


def test_windows_for_a_tokenizer_without_a_layout_is_an_error(model77, tmp_path, monkeypatch):
    monkeypatch.setattr(model77, "tokenizer", lambda texts: model77.tokenizer(texts))
    with pytest.raises(ParameterError, match="long_text"):
        embed_texts(model77, ["x"], RunOptions.of(tmp_path, long_text="windows"))


def test_a_bad_mode_is_refused_by_every_door(model77, tmp_path):
    with pytest.raises(ParameterError, match="truncate"):
        cliplab.embed_texts(model77, ["x"], cache_dir=tmp_path, long_text="average")


# ---- the Hugging Face path ----

@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A random-weight transformers CLIP built from a config, with CLIP's tokenizer made from open_clip's BPE files
    (no download)."""
    transformers = pytest.importorskip("transformers", reason="the hf: path needs transformers (cliplab[hf])")
    import open_clip
    import torch

    out = tmp_path_factory.mktemp("hfclip")
    st = open_clip.get_tokenizer("ViT-B-32")
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (out / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in st.encoder.items()}))
    ranks = sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p, _ in ranks) + "\n")
    tok = transformers.CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), pad_token="<|endoftext|>")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=dict(small, max_position_embeddings=77),
                                  vision_config=dict(small, image_size=32, patch_size=16), projection_dim=16)
    transformers.CLIPModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}) \
        .save_pretrained(out)
    with use(Recording()):
        return cliplab.load_model(f"hf:{out}", device="cpu", backend="torch",
                                  cache_dir=tmp_path_factory.mktemp("cachehf"))


def test_hf_counts_and_windows(hf_model, tmp_path):
    lay = long_text.layout(hf_model)
    assert (lay.context_length, lay.n_special) == (77, 2)
    assert lay.lengths([prompt(60), prompt(77), prompt(300)]) == [60, 77, 300]
    rec = Recording()
    texts = [prompt(60), prompt(77), prompt(300)]
    with use(rec), long_text.one_report():
        cut = embed_texts(hf_model, texts, RunOptions.of(tmp_path))
        whole = embed_texts(hf_model, texts, RunOptions.of(tmp_path, long_text="windows"))
    assert len(rec.warnings) == 1 and "1 of 3 prompts" in rec.warnings[0] and "300 tokens (223 cut)" in rec.warnings[0]
    np.testing.assert_allclose(whole[:2], cut[:2], atol=0)
    words = texts[2].split()
    raw = hf_model.encode_texts([" ".join(words[i:i + 75]) for i in range(0, 298, 75)]).numpy().astype(np.float64)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    hand = unit.mean(axis=0) / np.linalg.norm(unit.mean(axis=0))
    np.testing.assert_allclose(whole[2], hand, atol=1e-6)
