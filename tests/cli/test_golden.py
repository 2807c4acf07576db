"""Every command's outputs on the shapes data equal the golden files written before the architecture refactor
(tests/golden/: what they hold and leave out is in harness.py; key renames, if any, are in harness.RENAMES)."""
import pytest

from golden import harness


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, trained_cache):
    work = tmp_path_factory.mktemp("golden-work")
    return harness.run(work, trained_cache)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in harness.GOLDEN_DIR.glob("*.json")))
def test_output_equals_golden(outputs, name):
    golden = harness.rename(harness.load(name), harness.RENAMES.get(name, {}))
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
