"""Each model scores with its own head: CLIP's softmax over the candidates with its logit scale, SigLIP's sigmoid of
scale x cosine + a learned bias for each candidate; ``inspect`` reports the head's numbers and names the head, checked
against open_clip's own ``get_logits`` on random-weight models built locally (no hub: a SigLIP head on a small
open_clip config with the default tokenizer). SigLIP architectures whose tokenizer comes from transformers fail in one
line when it is missing or cannot be had."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.errors import ModelParameterError
from cliplab.models import open_model
from cliplab.progress import Silent, use
from cliplab.tasks.zeroshot import head_probabilities
from conftest import TINY_VIT, make_image

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("head-images")
    return [make_image(d / f"{i}.png", size=(64, 64), color=c)
            for i, c in enumerate([(220, 30, 30), (30, 40, 220), (40, 200, 60)])]


@pytest.fixture(scope="module")
def sigmoid_model(tmp_path_factory, cache_dir):
    """A random-weight model with SigLIP's head (a logit bias), bias and scale moved off their initial values.
    (Its config's name holds no "siglip": open_clip would then take the SigLIP tokenizer from transformers.)"""
    path = tmp_path_factory.mktemp("sigmoid") / "tiny-sigmoid-head.json"
    path.write_text(json.dumps({**TINY_VIT, "init_logit_bias": -10.0, "init_logit_scale": math.log(10.0)}))
    with use(Silent()):
        m = open_model(str(path), cache_dir=cache_dir, backend="torch")
    with torch.no_grad():
        m.model.logit_bias.fill_(-2.5)
        m.model.logit_scale.fill_(math.log(7.3))
    return m


def open_clip_logits(m, paths, prompts) -> np.ndarray:
    """open_clip's own image x text logits (scale x cosine, + bias where the model has one)."""
    pixels = torch.stack([m.preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        logits, _ = m.model.get_logits(pixels, m.tokenizer(prompts))
    return logits.numpy()


def test_sigmoid_head_matches_open_clip(sigmoid_model, images, cache_dir):
    m = sigmoid_model
    assert m.head == "sigmoid" and m.logit_bias == pytest.approx(-2.5) and m.logit_scale == pytest.approx(7.3)
    r = cliplab.inspect(m, images, prompts=PROMPTS, cache_dir=cache_dir, no_cache=True, quiet=True)
    want = torch.sigmoid(torch.from_numpy(open_clip_logits(m, images, PROMPTS))).numpy()
    assert np.allclose(r.probs, want, atol=1e-5) and not np.allclose(r.probs.sum(1), 1, atol=1e-3)
    assert np.array_equal(np.argsort(-r.probs, 1, kind="stable"), np.argsort(-r.scores, 1, kind="stable"))
    rec = r.record()
    assert rec["head"] == "sigmoid" and rec["logit_bias"] == pytest.approx(-2.5)
    assert "sigmoid_probability" in rec["images"][0]["ranking"][0]
    table = r.tables()[0]
    assert "sigmoid head" in table.title and table.columns[1] == "#1 (cos · sigmoid)"
    assert "sigmoid(7.3 × cos -2.5)" in table.caption
    assert set(r.metric_rows().metric) == {"top1_cosine", "top1_sigmoid_probability"}
    assert "sigmoid_probability" in r.scores_frame().columns


def test_softmax_head_matches_open_clip(tiny_checkpoint, images, cache_dir):
    cfg, ckpt, _ = tiny_checkpoint
    m = open_model(str(cfg), str(ckpt), cache_dir=cache_dir, backend="torch")
    assert m.head == "softmax" and m.logit_bias is None
    r = cliplab.inspect(m, images, prompts=PROMPTS, cache_dir=cache_dir, no_cache=True, quiet=True)
    want = torch.softmax(torch.from_numpy(open_clip_logits(m, images, PROMPTS)), dim=1).numpy()
    assert np.allclose(r.probs, want, atol=1e-5) and np.allclose(r.probs.sum(1), 1)
    rec = r.record()
    assert rec["head"] == "softmax" and rec["logit_bias"] is None and "probability" in rec["images"][0]["ranking"][0]
    assert r.tables()[0].columns[1] == "#1 (cos · prob)" and "softmax over the 4 candidates" in r.tables()[0].caption


def test_head_probabilities_math():
    cos = np.array([[0.2, -0.1, 0.05]])
    soft = head_probabilities(cos, 100.0)
    assert np.allclose(soft, np.exp(100 * cos) / np.exp(100 * cos).sum())
    sig = head_probabilities(cos, 10.0, -10.0)
    assert np.allclose(sig, 1 / (1 + np.exp(-(10 * cos - 10))))
    assert np.isfinite(head_probabilities(np.array([[1.0, -1.0]]), 1e4, -1e4)).all()  # no overflow


@pytest.fixture
def no_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed (import fails)


def test_siglip_without_transformers_is_one_error_line(no_transformers, cache_dir):
    res = CliRunner().invoke(app, ["zeroshot", "--model", "ViT-B-16-SigLIP2", "--limit", "5", "--cache-dir",
                                   str(cache_dir)])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: --model ViT-B-16-SigLIP2") and "pip install 'cliplab[hf]'" in lines[0]
    with pytest.raises(ModelParameterError, match=r"^model ViT-B-16-SigLIP2 takes its tokenizer .* pip install"):
        cliplab.load_model("ViT-B-16-SigLIP2", cache_dir=cache_dir, quiet=True)


def test_a_tokenizer_the_hub_cannot_give_is_one_error(monkeypatch):
    import open_clip

    from cliplab.models import openclip

    def offline(name):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nmore lines")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    with pytest.raises(ModelParameterError, match=r"^cannot get the tokenizer of model ViT-B-16-SigLIP2 .*"
                                                  r"couldn't connect.*with internet") as exc:
        openclip.load_tokenizer("ViT-B-16-SigLIP2", "ViT-B-16-SigLIP2", "timm/ViT-B-16-SigLIP2")
    assert "\n" not in str(exc.value)
    assert openclip.hf_tokenizer_name("ViT-B-32", open_clip.get_model_config("ViT-B-32")) is None
    assert openclip.hf_tokenizer_name("ViT-B-16-SigLIP2", open_clip.get_model_config("ViT-B-16-SigLIP2")) == \
        "timm/ViT-B-16-SigLIP2"
