"""Embedding on Ray (``--ray local``, ``ray="local"``) on a local Ray started by the test (127.0.0.1, 2 CPUs): the
same embeddings, failures, cache shards and keys as one process with the same backend, precision, batch size and
threads; a tower actor killed after N committed shards is restarted and the job completes with the same output,
and a rerun computes nothing; tar shards in CLIP_benchmark's layout, a manifest and a saved Hugging Face dataset
give the folder's embeddings through Ray too; without Ray, ``--ray`` is one error line saying what to install."""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
import zlib
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cliplab
from cliplab.cli import app
from cliplab.data import open_dataset
from cliplab.embed import embed_images
from cliplab.embed.cache import EmbeddingCache
from cliplab.embed.descriptors import DescriptorSpec
from conftest import make_image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
from layouts import COLOURS, class_folder, clip_benchmark_layout, folder_files  # noqa: E402

RUN = dict(batch_size=4)  # 4 images a batch, 2 batches a shard: the 30 readable images make 4 shards
SHARD_BATCHES = 2


@pytest.fixture(scope="module")
def model(trained_cache):
    return cliplab.load_model("tiny-shapes", cache_dir=trained_cache, backend="torch", quiet=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A class folder (split test) of 30 images, and two files in it that cannot be read."""
    root = tmp_path_factory.mktemp("ray-images") / "colours"
    for c, rgb in COLOURS.items():
        for i in range(10):
            size = (40 + 3 * i, 36 + (zlib.crc32(f"{c}{i}".encode()) % 9))
            make_image(root / "test" / c / f"{c}-{i}.png", size=size, color=rgb)
    (root / "test" / "red" / "red-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "test" / "blue" / "blue-empty.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def one_process(model, data, cache):
    return embed_images(model, data, cache, shard_batches=SHARD_BATCHES, workers=0, **RUN)


def on_ray(model, data, cache, **kw):
    from cliplab.embed.distributed import embed_images_ray

    return embed_images_ray(model, data, cache, **{"shard_batches": SHARD_BATCHES, **RUN, **kw})


def shard_keys(cache_root, model) -> list[str]:
    """Every key (embedded or failed) in the cache's shards, once per shard that holds it."""
    cache = EmbeddingCache(cache_root, model.fingerprint, DescriptorSpec().cache_kind())
    out = []
    for shard in cache.shards():
        with np.load(shard) as z:
            out += z["keys"].tolist() + z["fail_keys"].tolist()
    return out


def test_ray_gives_the_single_process_embeddings_failures_and_cache(model, images, ray_cluster, tmp_path):
    ds = open_dataset(str(images), split="test")
    ref = one_process(model, ds, tmp_path / "one")
    res = on_ray(model, ds, tmp_path / "ray")
    assert len(ref.indices) == 30 and len(ref.failures) == 2
    assert np.array_equal(ref.embeddings, res.embeddings) and np.array_equal(ref.indices, res.indices)
    assert ref.failures == res.failures and res.computed == 30
    assert res.cluster.actors == 1 and res.cluster.devices == "cpu"
    # the same keys in the cache, each once, in 4 shards; verified (checksums) when read back
    assert sorted(shard_keys(tmp_path / "ray", model)) == sorted(shard_keys(tmp_path / "one", model))
    assert len(EmbeddingCache(tmp_path / "ray", model.fingerprint, DescriptorSpec().cache_kind()).shards()) == 4
    again = one_process(model, ds, tmp_path / "ray")  # the single-process engine reuses Ray's shards as they are
    assert again.computed == 0 and np.array_equal(again.embeddings, ref.embeddings) and again.failures == ref.failures
    zs = [cliplab.zeroshot(model, str(images), split="test", cache_dir=tmp_path / c, batch_size=4, quiet=True).metrics
          for c in ("one", "ray")]
    numbers = [m[m.metric != "images_per_second"].set_index("metric")["value"] for m in zs]
    assert numbers[0].equals(numbers[1])


def test_a_killed_tower_actor_is_restarted_and_nothing_is_recomputed(model, images, ray_cluster, tmp_path):
    ds = open_dataset(str(images), split="test")
    ref = one_process(model, ds, tmp_path / "one")
    killed = []

    def kill_after_two(done):
        if done.committed == 2 and not killed:
            os.kill(done.pid, signal.SIGKILL)  # the actor process that has just encoded shard 2
            killed.append(done.pid)

    # one batch a shard: 8 shards, so shards are still to be sent to the killed actor after it is killed
    res = on_ray(model, ds, tmp_path / "ray", on_commit=kill_after_two, shard_batches=1)
    assert killed and res.computed == 30 and res.cluster.restarts == 1  # Ray restarted it; its calls were retried
    assert killed[0] in res.cluster.actor_peak_rss and len(res.cluster.actor_peak_rss) == 2
    assert np.array_equal(ref.embeddings, res.embeddings) and ref.failures == res.failures
    keys = shard_keys(tmp_path / "ray", model)
    assert max(Counter(keys).values()) == 1 and len(keys) == 32  # nothing written twice
    rerun = on_ray(model, ds, tmp_path / "ray")
    assert rerun.computed == 0 and np.array_equal(rerun.embeddings, ref.embeddings)
    assert sorted(shard_keys(tmp_path / "ray", model)) == sorted(keys)  # no shard added


def test_a_rerun_computes_only_the_shards_not_committed(model, images, ray_cluster, tmp_path):
    ds = open_dataset(str(images), split="test")
    ref = one_process(model, ds, tmp_path / "one")
    first = on_ray(model, ds.subset(list(range(16)), tag="first16"), tmp_path / "ray")  # the first two shards' items
    assert first.computed == 15 and len(first.failures) == 1  # blue-empty.jpg is one of them
    res = on_ray(model, ds, tmp_path / "ray")
    assert res.computed == 30 - 15 and np.array_equal(res.embeddings, ref.embeddings)
    assert res.failures == ref.failures


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A class folder of 24 readable images (PNGs and JPEGs), for the inputs that list the same files."""
    return class_folder(tmp_path_factory.mktemp("ray-clean") / "colours", n=8)


def test_shards_a_manifest_and_a_saved_hf_dataset_give_the_folders_embeddings(model, clean, ray_cluster, tmp_path):
    folder = open_dataset(str(clean), split="test")
    ref = one_process(model, folder, tmp_path / "folder")
    by_key = dict(zip([folder.source.keys()[i] for i in ref.indices], ref.embeddings))
    files, names = folder_files(clean), sorted(COLOURS)
    manifest = tmp_path / "list.csv"
    pd.DataFrame({"filepath": [str(p) for p, _ in files], "label": [names[c] for _, c in files]}).to_csv(
        manifest, index=False)
    from datasets import Dataset, Features, Image, Value

    hf = tmp_path / "hf"
    Dataset.from_dict({"image": [str(p) for p, _ in files], "label": [names[c] for _, c in files]},
                      features=Features({"image": Image(), "label": Value("string")})).save_to_disk(str(hf))
    inputs = {"webdataset": (str(clip_benchmark_layout(clean, tmp_path / "wds", nshards=3)), "test"),
              "manifest": (str(manifest), None), "hf": (str(hf), None)}
    for name, (spec, split) in inputs.items():
        ds = open_dataset(spec, split=split)
        res = on_ray(model, ds, tmp_path / f"cache-{name}")  # computed anew, in a cache of its own
        keys = ds.source.keys()
        assert res.computed == len(res.indices) == 24 and not res.failures, name
        assert ds.labels.tolist() == folder.labels.tolist(), name
        assert np.array_equal(res.embeddings, np.stack([by_key[keys[i]] for i in res.indices])), name


def test_the_command_and_the_python_function_take_ray(model, images, ray_cluster, trained_cache, tmp_path):
    ref = one_process(model, open_dataset(str(images), split="test"), tmp_path / "one")
    out = tmp_path / "x.npy"
    r = CliRunner().invoke(app, ["embed", "--dataset", str(images), "--split", "test", "--model", "tiny-shapes", "--backend",
                                 "torch", "--batch-size", "4", "--shard-batches", "2", "--ray", "local",
                                 "--cache-dir", str(trained_cache), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(out), ref.embeddings)
    X = cliplab.embed(model, str(images), split="test", ray="local", batch_size=4, cache_dir=tmp_path / "api",
                      quiet=True)
    assert np.array_equal(X, ref.embeddings)


@pytest.mark.parametrize("value", ["local", "ray://127.0.0.1:10001"])
def test_without_ray_the_flag_is_one_error_line_saying_what_to_install(images, trained_cache, monkeypatch, value):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as it does where it is not installed
    r = CliRunner().invoke(app, ["embed", "--dataset", str(images), "--split", "test", "--model", "tiny-shapes", "--ray", value,
                                 "--cache-dir", str(trained_cache)])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert "--ray" in lines[0] and "pip install 'cliplab[ray]'" in lines[0]


def test_a_bad_address_is_one_error_line(images, trained_cache):
    r = CliRunner().invoke(app, ["embed", "--dataset", str(images), "--split", "test", "--model", "tiny-shapes", "--ray", "cluster",
                                 "--cache-dir", str(trained_cache)])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "ray://HOST:PORT" in lines[0], r.output


@pytest.mark.parametrize("value", ["cluster", "ray://", "Local"])
def test_a_bad_address_is_refused_before_the_model_or_the_images_are_opened(tmp_path, value):
    """Regression: ``--ray`` was checked inside the run, after the model was loaded (and auto calibrated, printing a
    note), so a bad value came after other output. Now it is checked with every other parameter: a model and a
    dataset that do not exist are never reached."""
    with pytest.raises(cliplab.ParameterError, match="ray://HOST:PORT") as e:
        cliplab.embed("no-such-model", str(tmp_path / "no-such-folder"), ray=value)
    assert e.value.param == "ray"


def test_the_openvino_backend_runs_in_the_actors_too(images, ray_cluster, trained_cache, tmp_path):
    pytest.importorskip("openvino")
    ov = cliplab.load_model("tiny-shapes", cache_dir=trained_cache, backend="openvino", quiet=True)
    ds = open_dataset(str(images), split="test")
    ref = one_process(ov, ds, tmp_path / "one")
    res = on_ray(ov, ds, tmp_path / "ray")  # the actor converts the towers into this cache, as the driver did
    assert np.array_equal(ref.embeddings, res.embeddings) and ref.failures == res.failures


def test_the_ray_extra_brings_the_client_for_ray_addresses():
    """Regression (new-user try): `pip install 'cliplab[ray]'` brought no grpcio, so every ray://HOST:PORT address
    failed with Ray's 'Ray Client requires pip package ray[client]' instead of connecting."""
    pytest.importorskip("ray")
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("ray[") and "client" in d.split("[")[1].split("]")[0] for d in extras["ray"])
    assert importlib.util.find_spec("grpc") is not None  # installed with the extra, as CI installs it


def test_ray_client_warnings_before_a_failed_connection_end_in_one_error_line(capsys):
    """Ray Client warns on each failed attempt (`Ray Client connection timed out...`) before it raises: the user
    sees the one error line, not the warnings; a connection that succeeds passes Ray's warnings on."""
    import warnings

    from cliplab.embed.distributed import connect
    from cliplab.errors import ParameterError

    class FakeRay:
        def __init__(self, fail):
            self.fail = fail

        def is_initialized(self):
            return False

        def init(self, address, **kw):
            warnings.warn("Ray Client connection timed out. Ensure that the Ray Client port is open", UserWarning)
            if self.fail:
                raise ConnectionError("ray client connection timeout")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ParameterError, match="cannot connect to Ray \\(ray client connection timeout\\)"):
            connect("ray://127.0.0.1:1", FakeRay(fail=True))
    assert caught == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert connect("ray://127.0.0.1:1", FakeRay(fail=False))[0] is True
    assert [str(w.message)[:30] for w in caught] == ["Ray Client connection timed ou"]
