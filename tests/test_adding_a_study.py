"""Adding a study is one module: ``tests/toy_study.py`` (outside the package) registers a toy study, and every door
meets it with nothing else touched -- a CLI command with ``--help``, ``cliplab.toy`` with the declared defaults and
bounds, a section of the API reference, rows in the results store with the same config from both doors, and a
table in the HTML report.

docs/architecture.md's "adding a study" numbers are measured here (``python tests/test_adding_a_study.py --write``
writes them; the test checks the page holds what it measures)."""
from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cliplab
from cliplab import ParameterError
from cliplab.registry import register, unregister

ROOT = Path(__file__).resolve().parents[1]
TOY_MODULE = Path(__file__).resolve().parent / "toy_study.py"
DOC = ROOT / "docs" / "architecture.md"
LIMIT = 24


@pytest.fixture()
def toy():
    sys.path.insert(0, str(TOY_MODULE.parent))
    from toy_study import TOY

    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)
        cliplab.__dict__.pop("toy", None)


def measure(toy) -> dict[str, int]:
    """What the doors derive from the one toy module."""
    from cliplab.api.doors import signature
    from cliplab.cli import build_app

    app = build_app()
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    return {"files": 1, "lines": len(TOY_MODULE.read_text().splitlines()), "declared": len(toy.own()),
            "flags": len(toy.parameters("cli")), "keywords": len(signature(toy)[0].parameters),
            "commands": int("toy" in names)}


def test_the_toy_study_is_a_command_with_help(toy):
    from cliplab.cli import build_app

    res = CliRunner().invoke(build_app(), ["toy", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Toy study: the mean norm" in res.output
    assert re.search(r"--scale .*multiply the mean embedding norm by this\. \[>= 0\]", res.output)
    assert "[default: 2.0]" in res.output and "--label" in res.output and "--limit" in res.output
    bad = CliRunner().invoke(build_app(), ["toy", "--scale", "-1"])
    assert bad.exit_code == 2 and bad.output.strip() == "error: --scale -1.0: must be at least 0"


def test_the_toy_study_is_a_function_with_the_declared_defaults_and_bounds(toy):
    fn = cliplab.toy
    sig = inspect.signature(fn)
    assert list(sig.parameters)[:2] == ["model", "dataset"]
    assert sig.parameters["scale"].default == 2.0 and sig.parameters["label"].default == "toy"
    assert "multiply the mean embedding norm by this" in fn.__doc__
    with pytest.raises(ParameterError, match=r"^scale -1\.0: must be at least 0$"):
        fn(scale=-1.0)
    with pytest.raises(ParameterError, match=r"^scale 'x': expected a number, got str$"):
        fn(scale="x")
    with pytest.raises(TypeError, match="did you mean 'scale'"):
        fn(scael=1.0)


def test_the_toy_study_has_a_section_in_the_api_reference(toy):
    from cliplab.api.reference import function_section, functions_region

    section = function_section(toy)
    assert "### `cliplab.toy`" in section and "| `scale` = `2.0` | multiply the mean embedding norm" in section
    assert "The CLI's `--scale`" in section
    assert section in functions_region()


def test_the_toy_study_reaches_the_store_and_the_report_with_the_same_config_from_both_doors(toy, trained_cache,
                                                                                              tmp_path):
    from cliplab.cli import build_app
    from cliplab.report.html import build_report

    store = tmp_path / "store"
    res = CliRunner().invoke(build_app(), ["toy", "-d", "shapes:color", "--limit", str(LIMIT), "--scale", "3",
                                           "--backend", "torch", "--cache-dir", str(trained_cache), "--quiet",
                                           "--results", str(store), "-o", str(tmp_path / "toy.json")])
    assert res.exit_code == 0, res.output
    cli_rows = cliplab.read_results(store)
    r = cliplab.toy("tiny-shapes", "shapes:color", limit=LIMIT, scale=3.0, backend="torch", cache_dir=trained_cache,
                    quiet=True)
    assert list(cli_rows.value) == [r.value] and set(cli_rows.command) == {"toy"} == {r.command}
    assert json.loads(cli_rows.config.iloc[0]) == r.config and r.config["scale"] == 3.0
    assert json.loads((tmp_path / "toy.json").read_text())["config"] == r.config
    page = build_report(cli_rows, tmp_path / "report.html", exports=False).read_text()
    from cliplab.report.html import format_value

    assert "<h3>toy norms</h3>" in page and f">{format_value('mean_norm', r.value)}<" in page


def architecture_numbers(numbers: dict[str, int]) -> str:
    return (f"A toy study (`tests/toy_study.py`, {numbers['lines']} lines, {numbers['declared']} parameters of its own) "
            f"touches {numbers['files']} file: registered, it is a command with {numbers['flags']} options, a Python "
            f"function with {numbers['keywords']} keywords, a section of docs/api.md, rows in the results store and a "
            "table in the report (measured by `tests/test_adding_a_study.py`).\n")


def region(text: str) -> str:
    m = re.search(r"<!-- numbers:adding-a-study -->\n(.*?)<!-- /numbers:adding-a-study -->", text, re.S)
    assert m, f"{DOC} has no numbers:adding-a-study region"
    return m.group(1)


def test_architecture_page_quotes_the_measured_numbers(toy):
    assert region(DOC.read_text()) == architecture_numbers(measure(toy))


if __name__ == "__main__" and "--write" in sys.argv:  # rewrite the region from a measurement
    sys.path.insert(0, str(TOY_MODULE.parent))
    from toy_study import TOY

    register(TOY)
    text = DOC.read_text()
    new = text.replace(region(text), architecture_numbers(measure(TOY)))
    DOC.write_text(new)
    print(f"wrote {DOC}")
