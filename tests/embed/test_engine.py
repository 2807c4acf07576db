"""The embedding engine's choices that are not about the cache (tests/embed/test_engine_cache.py has those)."""
import pytest

from cliplab.embed.engine import default_workers
from cliplab.models.backends.openvino import OpenVINOTowers
from cliplab.models.backends.pytorch import TorchRuntime


def test_no_decoding_workers_beside_the_openvino_tower_on_two_cores():
    """On 2 cores the OpenVINO tower keeps both busy: decoding in worker processes only takes cores from it
    (docs/benchmarks.md). With more cores, or the PyTorch tower, workers decode as before. The backend's runtime
    decides (no backend name is branched on outside the backends)."""
    ov = OpenVINOTowers.__new__(OpenVINOTowers)  # the policy only: no towers converted
    assert default_workers(1000, 64, ov, cores=2) == 0
    assert default_workers(1000, 64, TorchRuntime(), cores=2) == 2
    assert default_workers(1000, 64, ov, cores=8) == 4
    assert default_workers(10, 64, TorchRuntime(), cores=8) == 0  # one batch: no workers to start


PEAK_RSS = """
import resource, sys
from cliplab.cli import main
sys.argv = ["cliplab", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
usage = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print("peak-rss", max(usage) * 1024, code, file=sys.stderr)
"""


def _peak_rss(args: list[str]) -> int:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True, timeout=600)
    line = [x for x in out.stderr.splitlines() if x.startswith("peak-rss")]
    assert line and line[-1].split()[2] in ("0", "None"), out.stderr[-3000:]
    return int(line[-1].split()[1])


@pytest.mark.parametrize("pipeline", ["pil", "tensor"])
def test_bombs_are_skipped_and_memory_stays_bounded(tiny_checkpoint, tmp_path, pipeline):
    """Regression: a 375-byte 100000x1 PNG was resized to 6,400,000 x 64 for this 64-px model (1.6 GB; 2.8 GB and
    more at 224 px). Embedding a folder of bombs (extreme aspect ratios, huge declared sizes, 16-bit and RGBA files
    over the decode budget) with a few good images peaks within 100 MB of embedding the good images alone, in both
    pipelines, and every bomb is skipped with its reason."""
    from bombs import write_bombs
    from conftest import make_image

    cfg, ckpt, _ = tiny_checkpoint
    good, bombs = tmp_path / "good", tmp_path / "bombs"
    for folder in (good, bombs):
        for i in range(4):
            make_image(folder / f"photo{i}.jpg", size=(320, 240), fmt="JPEG")
    write_bombs(bombs)
    common = ["embed", "--model", str(cfg), "--pretrained", str(ckpt), "--pipeline", pipeline, "--workers", "0",
              "--backend", "torch", "--device", "cpu", "--quiet", "--no-cache"]
    baseline = _peak_rss(common + ["--dataset", str(good), "--output", str(tmp_path / "good.npy")])
    peak = _peak_rss(common + ["--dataset", str(bombs), "--output", str(tmp_path / "bombs.npy")])
    assert peak - baseline < 100 * 2**20, f"{(peak - baseline) / 2**20:.0f} MB more than the good images alone"
    ids = (tmp_path / "bombs.ids.csv").read_text()
    assert "panorama.png" in ids and all(name not in ids for name in ("wide.png", "tall.png", "huge.png"))


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_signal_stops_the_run_in_one_line_and_keeps_finished_shards(tiny_checkpoint, tmp_path, signame, code,
                                                                      workers):
    """Regression: SIGTERM ended `cliplab embed` where it stood (exit -15, nothing said) and Ctrl-C, which reaches
    every process of the terminal's group, printed a KeyboardInterrupt traceback from each DataLoader worker. Now: one
    line, the shell's exit code (128 + the signal), the finished shards kept, and the next run resumes from them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import make_image

    cfg, ckpt, _ = tiny_checkpoint
    photos, cache = tmp_path / "photos", tmp_path / "cache"
    for i in range(400):
        make_image(photos / f"{i:04d}.jpg", size=(320, 240), color=(i % 255, 80, 200), fmt="JPEG")
    args = [sys.executable, "-m", "cliplab.cli", "embed", "--model", str(cfg), "--pretrained", str(ckpt),
            "--dataset", str(photos), "--batch-size", "4", "--shard-batches", "1", "--workers", workers,
            "--backend", "torch", "--device", "cpu", "--quiet", "--cache-dir", str(cache)]
    shards = lambda: list(cache.rglob("shard-*.npz"))  # noqa: E731
    # a terminal's Ctrl-C reaches a process that has SIGINT's default action; a test run started in the background
    # by a non-interactive shell inherits SIGINT ignored (POSIX), and so would the run: give it the default back
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not shards():
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before a shard was written: nothing left to interrupt"
    os.killpg(proc.pid, getattr(signal, signame))  # as a terminal's Ctrl-C / a job scheduler's stop: the whole group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "finished shards are cached" in lines[0], err[-2000:]
    assert lines[0].startswith("terminated (SIGTERM)" if signame == "SIGTERM" else "interrupted")
    kept = len(shards())
    assert kept >= 1
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(shards()) >= kept  # resumed: the shards of the stopped run were used, not thrown away
