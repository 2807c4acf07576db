"""Write the generated parts of docs/api.md from the code, so the page names exactly what the code has.

    python docs/make_api.py          # rewrite the regions between <!-- api:NAME --> and <!-- /api:NAME -->
    python docs/make_api.py --check  # exit 1 when docs/api.md is not what the code gives

Regions: ``functions`` (one section per function of the Python API, written from the study declarations by
:mod:`cliplab.api.reference`: signature, every keyword with its default and description, what it returns, an example)
and ``results`` (the display and export methods every study result has). The rest of the page is written by hand.
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cliplab.api.reference import functions_region, md, signature_text  # noqa: E402  (this checkout's code)
from cliplab.report.notebook import Notebook  # noqa: E402
from cliplab.results.store import read_results  # noqa: E402
from cliplab.studies.zeroshot import ZeroShotResult  # noqa: E402

PAGE = ROOT / "docs" / "api.md"

READ_RESULTS = "\n".join([
    '<a id="read-results"></a>', "### `cliplab.read_results`", "", "```python",
    signature_text("read_results", inspect.signature(read_results)), "```", "",
    md(inspect.getdoc(read_results) or ""), "",
    "| keyword = default | |", "|---|---|",
    "| `folders` | Results store folders (written by `.save(folder)` or the CLI's `--results`). |", "",
    "**Returns** `pd.DataFrame`", "", "```python", 'df = cliplab.read_results("results/")', "```", ""])


def member_text(owner: type, name: str) -> str:
    obj = inspect.getattr_static(owner, name)
    if isinstance(obj, property):
        head, doc = f"`.{name}`", inspect.getdoc(obj.fget)
    else:
        sig = inspect.signature(obj)
        parts = [f"{p.name}" + (f": {p.annotation}" if p.annotation is not p.empty else "")
                 + (f" = {p.default!r}" if p.default is not p.empty else "")
                 for p in sig.parameters.values() if p.name != "self"]
        ret = f" -> {sig.return_annotation}" if sig.return_annotation is not sig.empty else ""
        head, doc = f"`.{name}({', '.join(parts)}){ret}`", inspect.getdoc(obj)
    return f"- {head}: {md(' '.join((doc or '').split()))}"


def results_region() -> str:
    out = ["Every study result (the `Notebook` mixin, `cliplab/report/notebook.py`):", ""]
    out += [member_text(Notebook, n) for n in ("metrics", "to_json", "to_parquet", "save", "figures")]
    out += ["", "`cliplab.zeroshot` results (`ZeroShotResult`) also have:", ""]
    out += [member_text(ZeroShotResult, n) for n in ("predictions", "predictions_for")]
    return "\n".join(out) + "\n"


def fill(page: str, name: str, body: str) -> str:
    start, end = f"<!-- api:{name} -->", f"<!-- /api:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(page):
        raise SystemExit(f"{PAGE} has no {start} ... {end} region")
    return pattern.sub(lambda _: f"{start}\n{body}{end}", page)


def render_page(page: str) -> str:
    """The page with its generated regions as the code gives them."""
    functions = functions_region({"Reading results back": READ_RESULTS})
    return fill(fill(page, "functions", functions), "results", results_region())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when docs/api.md is out of date")
    args = parser.parse_args()
    page = PAGE.read_text(encoding="utf-8")
    new = render_page(page)
    if args.check:
        if new != page:
            print(f"{PAGE} is out of date: python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    if new != page:
        PAGE.write_text(new, encoding="utf-8")
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
