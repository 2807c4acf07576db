"""The benchmark scripts' shared helpers (benchmarks/_common.py): the CPU recorded with every result, and the docs
regions the scripts write their tables into (figures in docs/benchmarks.md come from the scripts)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _common  # noqa: E402


def test_cpu_info_names_the_cpu_and_its_flags():
    info = _common.cpu_info()
    assert info["model"] and info["cores"] >= 1 and isinstance(info["flags"], list)
    label = _common.cpu_label(info)
    assert info["model"] in label
    assert _common.cpu_label({"model": "Intel Xeon", "flags": ["avx512f", "amx_tile", "amx_bf16"],
                              "family_label": "Intel with AMX"}) == \
        "Intel Xeon (Intel with AMX; avx512f, amx_tile, amx_bf16)"


def test_machine_records_the_cpu():
    assert _common.machine()["cpu"]["model"]


def test_a_docs_region_is_rewritten_and_nothing_else(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("before\n<!-- numbers:t-zen4 -->\nold\n<!-- /numbers:t-zen4 -->\nafter\n")
    _common.write_docs_region("t-zen4", "| a |\n|---|\n| 1 |", docs)
    assert docs.read_text() == "before\n<!-- numbers:t-zen4 -->\n| a |\n|---|\n| 1 |\n<!-- /numbers:t-zen4 -->\nafter\n"
    with pytest.raises(SystemExit, match="no region"):
        _common.write_docs_region("t-xeon", "x", docs)
