"""The OpenVINO backend: the same embeddings as PyTorch (fp32), converted towers cached and reused, a tower it
cannot convert stays on PyTorch with a warning, and cache keys never mix backends."""
import numpy as np
import pytest
import torch

pytest.importorskip("openvino")

from cliplab.models import open_model  # noqa: E402
from cliplab.models.backends import openvino as ov_backend  # noqa: E402
from cliplab.progress import use  # noqa: E402
from recording import Recording  # noqa: E402


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double()).min())


def agree(model_args: tuple, cache, texts=("a red circle", "a large blue square in the top left", "x")) -> None:
    torch.manual_seed(0)  # a model without pretrained weights is initialised at random: the same weights twice
    ref = open_model(*model_args, device="cpu", cache_dir=cache, backend="torch")
    torch.manual_seed(0)
    ov = open_model(*model_args, device="cpu", cache_dir=cache, backend="openvino")
    assert ov.weights_fingerprint == ref.weights_fingerprint
    assert ov.runtime.image is not None and ov.runtime.text is not None
    torch.manual_seed(0)
    pixels = torch.randn(5, 3, *ref.image_size)
    assert min_cosine(ref.encode_images(pixels), ov.encode_images(pixels)) >= 0.99999
    assert min_cosine(ref.encode_texts(list(texts)), ov.encode_texts(list(texts))) >= 0.99999
    one = ov.encode_images(pixels[:1])  # dynamic batch: one image as well as five
    assert one.shape == (1, ref.embed_dim)


def test_tiny_shapes_resnet_agrees_with_torch(trained_cache):
    agree(("tiny-shapes",), trained_cache)


def test_tiny_vit_checkpoint_agrees_with_torch(tiny_checkpoint, tmp_path):
    cfg, ckpt, _ = tiny_checkpoint
    agree((str(cfg), str(ckpt)), tmp_path)


@pytest.mark.slow
def test_random_vit_b_32_agrees_with_torch(tmp_path):
    agree(("ViT-B-32",), tmp_path)


def test_converted_towers_are_cached_and_reused(trained_cache, tmp_path):
    first = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="openvino")
    assert first.runtime.converted == [] and not list((tmp_path / "openvino").glob("*.xml"))  # converted on first use
    pixels = torch.randn(2, 3, *first.image_size)
    first.encode_images(pixels)
    assert first.runtime.converted == ["image"]  # a study that needs one tower converts one
    many = [f"a photo of shape number {i}" for i in range(ov_backend.TEXT_CONVERT_MIN)]
    first.encode_texts(many)
    assert first.runtime.converted == ["image", "text"]
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 2
    second = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="openvino")
    assert torch.equal(first.encode_images(pixels), second.encode_images(pixels))
    assert torch.equal(first.encode_texts(["a dog"]), second.encode_texts(["a dog"]))
    assert second.text_backend(1) == "openvino"  # cached: even one text runs on OpenVINO
    assert second.runtime.converted == []  # both read from the cache, not converted again


def test_few_texts_run_on_torch_and_are_cached_under_torchs_key(trained_cache, tmp_path):
    """Converting the text tower costs more than PyTorch takes for a few hundred texts: below TEXT_CONVERT_MIN the
    texts run on PyTorch, and their cache key is PyTorch's, so nothing cached says OpenVINO computed it."""
    from cliplab.embed.texts import embed_texts

    ov = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="openvino")
    ref = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="torch")
    texts = ["a red circle", "a blue square"]
    assert ov.text_backend(len(texts)) == "torch" and ov.runtime.converted == []
    assert ov.text_fingerprint("torch") == ref.fingerprint != ov.fingerprint
    got = embed_texts(ov, texts, tmp_path)
    assert ov.runtime.converted == []  # nothing converted for two texts
    assert np.array_equal(got, embed_texts(ref, texts, tmp_path))  # the torch run reads them from the same cache
    assert ov.text_backend(ov_backend.TEXT_CONVERT_MIN) == "openvino" and ov.runtime.converted == ["text"]
    assert ov.text_fingerprint("openvino") == ov.fingerprint


def test_fingerprint_names_the_backend_weights_fingerprint_does_not(trained_cache, tmp_path):
    ref = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="torch")
    ov = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="openvino")
    assert ref.backend == "torch" and ov.backend == "openvino"
    assert ov.fingerprint != ref.fingerprint  # embedding caches are keyed by it: never shared across backends
    assert ov.weights_fingerprint == ref.weights_fingerprint == ref.fingerprint
    # auto picks by measurement, which depends on the CPU (torch won on one Zen 4 by 2%): whichever it picks,
    # its fingerprint is that backend's own
    auto = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path)
    assert auto.fingerprint == {"torch": ref, "openvino": ov}[auto.backend].fingerprint


def test_a_tower_openvino_cannot_convert_stays_on_torch_with_a_warning(trained_cache, tmp_path, monkeypatch):
    def fail(module, example, path):
        raise RuntimeError("unsupported operation aten::something")

    monkeypatch.setattr(ov_backend, "_convert", fail)
    progress = Recording()
    with use(progress):
        m = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="openvino")
        assert m.runtime.image is None and m.runtime.text is None
    assert len(progress.warnings) == 2 and all("runs on PyTorch" in w and "aten::something" in w
                                               for w in progress.warnings)
    ref = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="torch")
    pixels = torch.randn(2, 3, *m.image_size)
    assert torch.allclose(m.encode_images(pixels), ref.encode_images(pixels), atol=1e-5)


def test_a_converted_tower_that_disagrees_with_torch_is_not_used_or_kept(trained_cache, tmp_path, monkeypatch):
    monkeypatch.setitem(ov_backend.MIN_COSINE, "f32", 1.5)  # no conversion can pass: the check must reject it
    progress = Recording()
    with use(progress):
        m = open_model("tiny-shapes", device="cpu", cache_dir=tmp_path, backend="openvino")
        assert m.runtime.image is None
    assert len(progress.warnings) == 1 and "disagrees with PyTorch (min cosine " in progress.warnings[0]
    assert not list((tmp_path / "openvino").glob("*-image-*"))  # the next run converts again, not reuses it


def test_cli_backend_openvino_gives_the_torch_numbers(trained_cache, tmp_path):
    import json

    from typer.testing import CliRunner

    from cliplab.cli import app

    acc = {}
    for backend in ("torch", "openvino"):
        out = tmp_path / f"{backend}.json"
        res = CliRunner().invoke(app, ["zeroshot", "--dataset", "shapes:color", "--limit", "300", "--device", "cpu",
                                       "--backend", backend, "--cache-dir", str(trained_cache), "-o", str(out),
                                       "--quiet"])
        assert res.exit_code == 0, res.output
        rec = json.loads(out.read_text())
        assert rec["models"][0]["backend"] == backend and rec["models"][0]["precision"] == "fp32"
        acc[backend] = rec["template_sets"][0]["per_class_recall"], rec["metrics"]["acc1"]
    assert acc["torch"] == acc["openvino"]


@pytest.mark.parametrize("args,message", [
    (["--backend", "openvino", "--precision", "fp16"], "error: --precision 'fp16': the OpenVINO backend runs fp32"),
    (["--backend", "tpu"], "error: --backend 'tpu': choose one of auto, torch, openvino"),
])
def test_cli_backend_errors(args, message, tmp_path):
    from typer.testing import CliRunner

    from cliplab.cli import app

    res = CliRunner().invoke(app, ["zeroshot", "--cache-dir", str(tmp_path), *args])
    assert res.exit_code == 2 and res.output.strip().startswith(message), res.output


def test_auto_is_openvino_on_cpu_when_installed():
    from cliplab.models import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "openvino"
    assert resolve_backend(None, torch.device("cpu")) == "openvino"  # the default
    assert resolve_backend("auto", torch.device("cpu"), compile=True) == "torch"  # torch.compile is a torch thing
    assert resolve_backend("auto", torch.device("meta")) == "torch"  # any other device


@pytest.mark.slow
def test_openvino_models_then_the_demo_do_not_crash_the_process():
    """Regression: loading a model twice with OpenVINO (two runtimes in one process), then running the demo (torch,
    DataLoader worker processes) ended the test session with a segmentation fault. One OpenVINO runtime per
    process now. The two tests that crashed together run in a subprocess, so a crash fails this test only."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/models/test_openvino.py::test_converted_towers_are_cached_and_reused",
                           "tests/report/test_report.py::test_demo_store_has_every_study"],
                          cwd=root, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
