"""The example notebook (docs/examples/tour.ipynb) runs end to end in a Jupyter kernel, and what it shows is what the
API computes: the zero-shot table holds the top-1 the same call gives in this process, results render their
figures and image grids inline, and the notebook in the repository is the one docs/examples/make_tour.py writes
(without outputs).

The kernel inherits this process's environment: PYTHONPATH, CLIPLAB_OFFLINE (tests/conftest.py) and a
CLIPLAB_CACHE_DIR pointing at a fresh cache, so the notebook generates ``shapes`` and embeds from scratch. It runs
in a temporary folder (the notebook writes a few PNGs and a results store there).
"""
from __future__ import annotations

import base64
import html
import importlib.util
import io
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
NOTEBOOK = EXAMPLES / "tour.ipynb"
CELL_TIMEOUT = 600  # s per cell; the whole notebook takes 1-3 minutes on 2 CPU cores

# The inputs of the notebook's cell tagged "zeroshot" (docs/examples/make_tour.py): keep them in step.
ZEROSHOT_DATASET, ZEROSHOT_LIMIT = "shapes:shape", 300
ZEROSHOT_TEMPLATES = ["simple", "openai-cifar", "a photo of a small {}."]

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PNG_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")

slow = pytest.mark.slow  # the tests that execute the notebook (1-2 minutes); the file checks are quick


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """(executed notebook, the cache it used)."""
    work = tmp_path_factory.mktemp("tour")
    cache = tmp_path_factory.mktemp("tour-cache")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT, allow_errors=True,
                                     resources={"metadata": {"path": str(work)}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPLAB_CACHE_DIR", str(cache))
        mp.setenv("CLIPLAB_OFFLINE", "1")
        client.execute()
    return nb, cache


def tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r} in {NOTEBOOK.name}, found {len(cells)}"
    return cells[0]


def result_html(cell) -> str:
    """The text/html of the cell's result (the value of its last line, i.e. the study result's _repr_html_)."""
    out = [o for o in cell.outputs if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert out, f"cell {cell.source.splitlines()[0]!r} has no HTML result; outputs: " \
                f"{[o.output_type for o in cell.outputs]}"
    return out[-1].data["text/html"]


def html_table(shown: str, title_start: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first table in ``shown`` whose title starts with ``title_start``."""
    m = re.search(rf"<b>{re.escape(title_start)}[^<]*</b><table>(.*?)</table>", shown, re.S)
    assert m, f"no table titled {title_start!r}..."
    header = re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", m.group(1))
    rows = [re.findall(r"<td(?:\s[^>]*)?>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", m.group(1))]
    return header, [r for r in rows if r]


def png_images(cell) -> list[bytes]:
    """Every PNG the cell shows: image/png outputs and data: URIs inside its HTML outputs."""
    found = []
    for o in cell.outputs:
        data = o.get("data", {})
        if "image/png" in data:
            found.append(base64.b64decode(data["image/png"]))
        found += [base64.b64decode(m) for m in PNG_URI.findall(data.get("text/html", ""))]
    return found


def assert_real_pngs(cell, at_least: int = 1) -> None:
    from PIL import Image

    pngs = png_images(cell)
    assert len(pngs) >= at_least, f"cell {cell.source.splitlines()[0]!r} shows {len(pngs)} PNG(s)"
    for data in pngs:
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG" and min(img.size) >= 16, img.size


def test_notebook_is_stored_clean_and_generated_by_its_script():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), \
        "store the notebook without outputs: python docs/examples/make_tour.py"
    spec = importlib.util.spec_from_file_location("make_tour", EXAMPLES / "make_tour.py")
    make_tour = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tour)
    built = make_tour.build()
    assert [(c.cell_type, c.source) for c in built.cells] == [(c.cell_type, c.source) for c in nb.cells], \
        "tour.ipynb differs from what make_tour.py writes: python docs/examples/make_tour.py"


@slow
def test_no_cell_raised(executed):
    nb, _ = executed
    errors = [f"cell {i} ({c.source.splitlines()[0]!r}): {o.ename}: {o.evalue}\n" + ANSI.sub("", "\n".join(o.traceback))
              for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, "\n\n".join(errors)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")


@slow
def test_zeroshot_cell_shows_the_numbers_the_api_computes(executed):
    import cliplab
    from cliplab.results.result import pct

    nb, cache = executed
    shown = result_html(tagged(nb, "zeroshot"))
    ds = cliplab.load_dataset(ZEROSHOT_DATASET, limit=ZEROSHOT_LIMIT, cache_dir=cache, quiet=True)
    r = cliplab.zeroshot("tiny-shapes", ds, templates=ZEROSHOT_TEMPLATES, cache_dir=cache, quiet=True)
    assert len(r.evaluations) == len(ZEROSHOT_TEMPLATES)
    top1 = {ev.template_set.name: pct(ev.result.metrics["acc1"]) for ev in r.evaluations}
    best = max(r.evaluations, key=lambda ev: ev.result.metrics["acc1"])
    assert f"top-1 {top1[best.template_set.name]} %" in shown, (top1, shown[:400])
    header, rows = html_table(shown, "zero-shot")
    shown_top1 = {row[header.index("templates")]: row[header.index("top-1 %")] for row in rows}
    assert shown_top1 == {html.escape(name): value for name, value in top1.items()}


@slow
def test_zeroshot_and_search_show_images(executed):
    nb, _ = executed
    assert_real_pngs(tagged(nb, "zeroshot"))  # the per-class accuracy / confusion figure
    search = tagged(nb, "search")
    assert PNG_URI.search(result_html(search)), "the search result has no inline image grid"
    assert_real_pngs(search, at_least=3)  # one grid per query


@slow
def test_metrics_cell_has_the_acc1_row(executed):
    nb, _ = executed
    shown = result_html(tagged(nb, "metrics"))
    assert re.search(r"<td>acc1</td>", shown), shown[:600]


@slow
def test_own_plot_is_shown(executed):
    """A matplotlib figure of the user's own shows after cliplab results have drawn theirs."""
    nb, _ = executed
    assert_real_pngs(tagged(nb, "pca"))


def test_api_reference_matches_the_code():
    """docs/api.md's generated sections (signatures, keywords, defaults, result methods) are what the code has."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "docs" / "make_api.py"), "--check"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


# ---- what an executed notebook keeps: no progress text, no tqdm warning, short tracebacks ----

QUIET_CELLS = {
    "load": "import cliplab\nm = cliplab.load_model('tiny-shapes', backend='torch')",
    "study": "r = cliplab.zeroshot(m, 'shapes:color', limit=40, no_cache=True, backend='torch')",
    "parameter": "cliplab.zeroshot(m, 'shapes:color', split='tset')",
    "deep": ("import pathlib\nfor c in ('a', 'b'):\n    pathlib.Path('unreadable', c).mkdir(parents=True, exist_ok=True)\n"
             "    pathlib.Path('unreadable', c, 'x.png').write_bytes(b'not a png')\n"
             "cliplab.zeroshot(m, 'unreadable', no_cache=True)"),
    "typo": "cliplab.zeroshot(templte='a photo of a {}.')",
}


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    """A small notebook of API calls, executed as nbconvert and papermill execute one (nbclient, no stdin)."""
    work = tmp_path_factory.mktemp("quiet")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": [tag]}) for tag, src in QUIET_CELLS.items()]
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT, allow_errors=True,
                                     resources={"metadata": {"path": str(work)}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPLAB_CACHE_DIR", str(tmp_path_factory.mktemp("quiet-cache")))
        client.execute()
    return nb


def stderr_text(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")


@slow
def test_an_executed_notebook_keeps_no_progress_text_and_no_tqdm_warning(quiet_run):
    for tag in ("load", "study"):
        cell = tagged(quiet_run, tag)
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs
        text = stderr_text(cell)
        assert "TqdmWarning" not in text and "IProgress" not in text, text
        assert "%|" not in text and "\r" not in text and "embedding" not in text, text


@slow
def test_errors_in_a_notebook_show_at_most_two_frames(quiet_run):
    expected = {"parameter": ("DatasetParameterError", "split 'tset'"),
                "deep": ("DatasetError", "none of the 2 images could be read"),
                "typo": ("TypeError", "did you mean 'templates'?")}
    for tag, (name, text) in expected.items():
        errors = [o for o in tagged(quiet_run, tag).outputs if o.output_type == "error"]
        assert len(errors) == 1 and errors[0].ename == name and text in errors[0].evalue, errors
        shown = ANSI.sub("", "\n".join(errors[0].traceback))
        frames = re.findall(r"^(?:Cell In\[\d+\]|File [^\n]+:\d+)", shown, re.M)
        assert frames[0].startswith("Cell In[") and len(frames) <= 3, shown  # the cell, then at most 2 below it


@slow
def test_a_notebook_run_by_a_person_shows_one_bar_line_and_no_tqdm_warning(tmp_path):
    """A kernel whose cells allow stdin (Jupyter, VS Code): the bars show, redrawn in place on one line."""
    from jupyter_client.manager import start_new_kernel

    code = ("import cliplab\nm = cliplab.load_model('tiny-shapes', backend='torch')\n"
            "r = cliplab.zeroshot(m, 'shapes:color', limit=40, no_cache=True, backend='torch')")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPLAB_CACHE_DIR", str(tmp_path / "cache"))
        km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        kc.allow_stdin = True
        streams = []
        reply = kc.execute_interactive(code, timeout=CELL_TIMEOUT, allow_stdin=True, stdin_hook=lambda msg: None,
                                       output_hook=lambda msg: streams.append(msg["content"])
                                       if msg["msg_type"] == "stream" else None)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", reply["content"]
    err = "".join(s["text"] for s in streams if s["name"] == "stderr")
    assert "TqdmWarning" not in err and "embedding images" in err and "%|" in err, err
    assert "\n" not in err.strip(), err  # every redraw is a carriage return: one line, not one per update
