"""Every command's outputs on the shapes data equal the golden files written before the architecture refactor
(tests/golden/: what they hold and leave out is in harness.py; key renames, if any, are in harness.RENAMES)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from golden import harness


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """The commands run as make_golden.py ran them: from an empty cache of their own, in a process of their own.
    Regression: they shared the session's cache, so embeddings other tests had cached (tests/api) were read back,
    and the probes' L-BFGS iteration counts moved in the last bits (CI failed on probe and demo)."""
    work = tmp_path_factory.mktemp("golden-work")
    trained_cache = tmp_path_factory.mktemp("golden-cache")
    out = work / "outputs.json"
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from golden import harness; "
            "Path(sys.argv[4]).write_text(json.dumps(harness.run(Path(sys.argv[2]), Path(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[1]), str(work),
                           str(trained_cache), str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in harness.GOLDEN_DIR.glob("*.json")))
def test_output_equals_golden(outputs, name):
    golden = harness.rename(harness.load(name), harness.RENAMES.get(name, {}))
    golden = harness.without_changed_config(golden, harness.CONFIG_CHANGES.get(name, {}))
    problems = harness.diff(golden, outputs[name], additions=harness.ADDITIONS.get(name, set()))
    assert not problems, f"{name}: {len(problems)} differences from the golden output:\n" + "\n".join(problems[:30])


def test_diff_sees_a_changed_number_a_renamed_key_and_a_missing_row():
    golden = {"metrics": {"acc1": 0.5, "n": 10}, "rows": [{"a": 1.0}, {"a": float("nan")}]}
    assert harness.diff(golden, {"metrics": {"acc1": 0.5 + 1e-9, "n": 10}, "rows": [{"a": 1.0}, {"a": float("nan")}]}) == []
    assert harness.diff(golden, {"metrics": {"acc1": 0.51, "n": 10}, "rows": golden["rows"]})
    assert harness.diff(golden, {"metrics": {"top1": 0.5, "n": 10}, "rows": golden["rows"]})
    assert harness.diff(golden, {"metrics": golden["metrics"], "rows": golden["rows"][:1]})
    assert harness.rename(golden, {"acc1": "top1"})["metrics"] == {"top1": 0.5, "n": 10}
    grown = {**golden, "config": {}}
    assert harness.diff(golden, grown) and not harness.diff(golden, grown, additions={"/config"})
    # a config may gain keys; a golden config key keeps its value unless CONFIG_CHANGES documents it
    old = {"config": {"k": 1, "renamed": "x"}}
    assert not harness.diff(old, {"config": {"k": 1, "renamed": "x", "new": 2}})
    assert harness.diff(old, {"config": {"k": 2, "renamed": "x"}}) == ["/config/k: 1 != 2"]
    assert harness.diff(old, {"config": {"k": 1, "now_named": "x"}}) == ["/config/renamed: missing now"]
    assert not harness.diff(harness.without_changed_config(old, {"renamed": "now `now_named`"}),
                            {"config": {"k": 1, "now_named": "x"}})
