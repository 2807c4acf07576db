"""The embedding engine's choices that are not about the cache (tests/embed/test_engine_cache.py has those)."""
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
