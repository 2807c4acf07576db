"""Zero-shot classifier construction: hand-checked averaging and agreement with open_clip's own builder."""
import numpy as np
import pytest
import torch

from cliplab.prompts import TemplateSet, resolve_all, resolve_templates
from cliplab.tasks.zeroshot import build_classifier, build_classifier_ragged, evaluate


def test_template_average_by_hand():
    # class 0 prompts: (3,4) and (1,0) -> unit (0.6,0.8),(1,0) -> mean (0.8,0.4) -> renorm (2,1)/sqrt5
    emb = np.array([[[3.0, 4.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 5.0]]])
    clf = build_classifier(emb)
    assert clf[0] == pytest.approx(np.array([2, 1]) / np.sqrt(5), abs=1e-6)
    assert clf[1] == pytest.approx([0.0, 1.0], abs=1e-6)


def test_ragged_equals_dense_when_counts_match():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(4, 3, 8))
    owner = np.repeat(np.arange(4), 3)
    assert np.allclose(build_classifier(emb), build_classifier_ragged(emb.reshape(12, 8), owner, 4), atol=1e-6)


def test_evaluate_scores_are_cosines():
    img = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    clf = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = evaluate(img, np.array([0, 1, 1]), clf)
    assert res.scores[2] == pytest.approx([np.sqrt(0.5), np.sqrt(0.5)])
    assert res.metrics["acc1"] == pytest.approx(2 / 3)  # tie on image 2 goes to class 0
    assert res.metrics["mean_correct_similarity"] == pytest.approx((1 + 1 + np.sqrt(0.5)) / 3)


def test_classifier_matches_open_clip_builder(tiny_checkpoint, cache_dir):
    """Our classifier from (cached) text embeddings equals open_clip.build_zero_shot_classifier."""
    from open_clip import build_zero_shot_classifier

    from cliplab.models import open_model
    from cliplab.embed.texts import class_text_embeddings

    cfg, ckpt, _ = tiny_checkpoint
    m = open_model(str(cfg), str(ckpt), cache_dir=cache_dir)
    classnames = ["circle", "square", "red shape"]
    ts = resolve_templates("openai-cifar")[0]
    ours = build_classifier(class_text_embeddings(m, classnames, ts, cache_dir))
    with torch.no_grad():
        ref = build_zero_shot_classifier(m.model, m.tokenizer, classnames, list(ts.templates), device="cpu").T.numpy()
    assert np.allclose(ours, ref, atol=1e-5)


def test_named_template_sets():
    assert resolve_templates("simple")[0].templates == ("a photo of a {}.",)
    assert len(resolve_templates("openai-imagenet-80")[0].templates) == 80
    assert len(resolve_templates("openai-imagenet-7")[0].templates) == 7
    assert len(resolve_templates("openai-cifar")[0].templates) == 18
    assert len(resolve_templates("openai-eurosat")[0].templates) == 3
    assert resolve_templates("openai-food101")[0].templates == ("a photo of {}, a type of food.",)
    assert TemplateSet("x", ("a {} b", "{c}!")).texts(["cat", "dog"]) == ["a cat b", "cat!", "a dog b", "dog!"]


def test_template_files_and_errors(tmp_path):
    from cliplab.errors import CliplabError

    f = tmp_path / "mine.txt"
    f.write_text("a sketch of a {}.\n# comment\nart of the {}.\n")
    assert resolve_templates(str(f))[0].templates == ("a sketch of a {}.", "art of the {}.")
    j = tmp_path / "sets.json"
    j.write_text('{"photo": ["a photo of a {}."], "sketch": ["a sketch of a {}."]}')
    assert [s.name for s in resolve_templates(str(j))] == ["photo", "sketch"]
    merged = resolve_all(["simple", "a sketch of a {}."], ensemble=True)
    assert len(merged) == 1 and merged[0].templates == ("a photo of a {}.", "a sketch of a {}.")
    with pytest.raises(CliplabError, match="placeholder"):
        bad = tmp_path / "bad.txt"
        bad.write_text("no placeholder here\n")
        resolve_templates(str(bad))
    with pytest.raises(CliplabError, match="not a named set"):
        resolve_templates("imagenet-typo")
    with pytest.raises(CliplabError, match="file not found"):
        resolve_templates(str(tmp_path / "missing.txt"))
