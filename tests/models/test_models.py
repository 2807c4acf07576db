"""Model loading: real checkpoint formats round-trip, embeddings match open_clip, offline errors are one line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.errors import ModelLoadError
from cliplab.models import open_model
from cliplab.models.openclip import needs_quick_gelu


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_checkpoint_loads_with_same_embeddings(tiny_checkpoint, cache_dir):
    cfg, ckpt, ref = tiny_checkpoint
    m = open_model(str(cfg), str(ckpt), cache_dir=cache_dir)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m.encode_images(x), ref.encode_image(x), atol=1e-6)
        tok = m.tokenizer(["a red circle", "a blue square"])
        assert torch.allclose(m.encode_texts(["a red circle", "a blue square"]), ref.encode_text(tok), atol=1e-6)
    assert m.embed_dim == 32 and m.precision == "fp32"


def test_fingerprint_tracks_weights_and_is_stable(tiny_checkpoint, cache_dir, tmp_path):
    cfg, ckpt, ref = tiny_checkpoint
    a = open_model(str(cfg), str(ckpt), cache_dir=cache_dir).fingerprint
    b = open_model(str(cfg), str(ckpt), cache_dir=cache_dir).fingerprint
    assert a == b
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    sd["logit_scale"] += 1.0
    other = tmp_path / "other.pt"
    torch.save({"state_dict": sd}, other)
    assert open_model(str(cfg), str(other), cache_dir=cache_dir).fingerprint != a


def test_local_dir_safetensors_layout(tiny_checkpoint, cache_dir, tmp_path):
    """open_clip's hub layout (open_clip_config.json + open_clip_model.safetensors) via --model local-dir:."""
    from safetensors.torch import save_file

    cfg, _, ref = tiny_checkpoint
    folder = tmp_path / "hub-layout"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": json.loads(cfg.read_text()),
                                                               "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    m = open_model(f"local-dir:{folder}", cache_dir=cache_dir)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(m.encode_images(x), ref.encode_image(x).detach(), atol=1e-6)
    assert m.preprocess_cfg["mean"] == [0.5, 0.5, 0.5]


def test_embed_matches_open_clip_encode_image(tiny_checkpoint, cache_dir, tmp_path):
    """`cliplab.embed` on files == model.encode_image on the same preprocessed batch (fp32)."""
    from conftest import make_image

    from cliplab.data import open_dataset
    from cliplab.embed import embed_images

    cfg, ckpt, ref = tiny_checkpoint
    for i in range(6):
        make_image(tmp_path / "imgs" / f"{i}.png", size=(80 + 10 * i, 60), color=(40 * i, 100, 200 - 30 * i))
    ds = open_dataset(str(tmp_path / "imgs"), cache_dir=cache_dir)
    m = open_model(str(cfg), str(ckpt), cache_dir=cache_dir)
    res = embed_images(m, ds, cache_dir, batch_size=4)
    batch = torch.stack([m.preprocess(Image.open(p).convert("RGB")) for p in ds.paths])
    with torch.no_grad():
        direct = ref.encode_image(batch).numpy()
    assert res.embeddings.shape == (6, 32)
    assert _cos(res.embeddings, direct).min() >= 0.9999


def test_quick_gelu_rule():
    from open_clip.pretrained import get_pretrained_cfg

    assert needs_quick_gelu("ViT-B-32", get_pretrained_cfg("ViT-B-32", "openai"), {}) is True
    assert needs_quick_gelu("ViT-B-32-quickgelu", {"quick_gelu": True}, {}) is False
    assert needs_quick_gelu("ViT-B-32", get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k"), {}) is False


def test_offline_pretrained_tag_is_one_clear_error(cache_dir):
    with pytest.raises(ModelLoadError) as exc:
        open_model("ViT-B-32", "openai", cache_dir=cache_dir)
    msg = str(exc.value)
    assert "openai" in msg and "pass it with pretrained PATH" in msg and "\n" not in msg


@pytest.mark.parametrize("model,pretrained,match", [
    ("ViT-Nope-99", None, "unknown model"),
    ("ViT-B-32", "no_such_tag", "known tags: openai"),
    ("ViT-B-32", "/does/not/exist.pt", "checkpoint file not found"),
    ("/does/not/exist.json", None, "config file not found"),
])
def test_bad_model_arguments(model, pretrained, match, cache_dir):
    with pytest.raises(ModelLoadError, match=match):
        open_model(model, pretrained, cache_dir=cache_dir)


def test_hf_without_transformers_or_offline(cache_dir):
    with pytest.raises(ModelLoadError, match="hf"):
        open_model("hf:openai/clip-vit-base-patch32", cache_dir=cache_dir)


def test_channels_last_and_compile_give_the_same_embeddings(trained_cache):
    """Execution options of the image tower must not change its numbers (channels_last is the default for conv
    towers on every device)."""
    import numpy as np

    from cliplab.embed.engine import auto_batch_size
    from cliplab.models import open_model

    ref = open_model("tiny-shapes", cache_dir=trained_cache, channels_last=False, backend="torch")
    assert ref.conv_tower and not ref.channels_last
    x = torch.rand(4, 3, 64, 64)
    base = ref.encode_images(x).numpy()
    cl = open_model("tiny-shapes", cache_dir=trained_cache, backend="torch")  # PyTorch's execution options
    assert cl.channels_last and cl.fingerprint == ref.fingerprint  # the default for a conv tower
    np.testing.assert_allclose(cl.encode_images(x).numpy(), base, rtol=1e-4, atol=1e-5)
    assert auto_batch_size(ref) == 64  # no GPU: the CPU default
    comp = open_model("tiny-shapes", cache_dir=trained_cache, compile=True)
    try:
        out = comp.encode_images(x).numpy()
    except Exception as exc:  # inductor needs a working C++ toolchain
        pytest.skip(f"torch.compile unavailable here: {type(exc).__name__}")
    np.testing.assert_allclose(out, base, rtol=1e-4, atol=1e-4)


def test_checkpoint_of_another_architecture_says_what_differs(tiny_checkpoint, cache_dir, tmp_path):
    """Regression: the message ended at 'Error(s) in loading state_dict for CLIP:' with nothing after the colon."""
    import json

    from conftest import TINY_VIT

    cfg, ckpt, _ = tiny_checkpoint
    other = json.loads(json.dumps(TINY_VIT))
    other["embed_dim"], other["vision_cfg"]["layers"] = 48, 3
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ModelLoadError) as info:
        open_model(str(tmp_path / "other.json"), str(ckpt), device="cpu", cache_dir=cache_dir)
    msg = str(info.value)
    assert "\n" not in msg and not msg.rstrip().endswith(":")
    assert "does not fit" in msg and "text_projection: checkpoint 32x32, model 32x48" in msg
    assert "missing from the checkpoint" in msg and "(model CONFIG.json)" in msg
    with pytest.raises(ModelLoadError, match="does not fit model RN50: .*other shapes"):
        open_model("RN50", str(ckpt), device="cpu", cache_dir=cache_dir)
