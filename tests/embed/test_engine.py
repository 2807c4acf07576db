"""The embedding engine's choices that are not about the cache (tests/embed/test_engine_cache.py has those)."""
from cliplab.embed.engine import default_workers


def test_no_decoding_workers_beside_the_openvino_tower_on_two_cores():
    """On 2 cores the OpenVINO tower keeps both busy: decoding in worker processes only takes cores from it
    (docs/benchmarks.md). With more cores, or the PyTorch tower, workers decode as before."""
    assert default_workers(1000, 64, "openvino", cores=2) == 0
    assert default_workers(1000, 64, "torch", cores=2) == 2
    assert default_workers(1000, 64, "openvino", cores=8) == 4
    assert default_workers(10, 64, "torch", cores=8) == 0  # one batch: no workers to start
