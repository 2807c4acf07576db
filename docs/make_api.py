"""Write the generated parts of docs/api.md from the code, so the page names exactly what the code has.

    python docs/make_api.py          # rewrite the regions between <!-- api:NAME --> and <!-- /api:NAME -->
    python docs/make_api.py --check  # exit 1 when docs/api.md is not what the code gives

Regions: ``functions`` (one section per function of :mod:`cliplab.api`: signature, every keyword with its default,
what it returns, the docstring's example) and ``results`` (the display and export methods every study result has).
Keywords and defaults come from the signatures; descriptions from the numpydoc docstrings, or, for keywords a
docstring leaves out, from ``SHARED`` below (the keywords every function shares). Anything else is listed on stderr
as undocumented. The rest of the page is written by hand.
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cliplab.api as api  # noqa: E402  (this checkout, not an installed copy)
from cliplab.report.notebook import Notebook  # noqa: E402
from cliplab.studies.zeroshot import ZeroShotRun  # noqa: E402

PAGE = ROOT / "docs" / "api.md"

GROUPS = [
    ("Models, datasets and embeddings", ["load_model", "load_dataset", "embed", "embed_texts"]),
    ("Classification studies", ["zeroshot", "prompts", "probe", "compare", "inspect", "attack"]),
    ("Retrieval studies", ["retrieval", "search", "similar", "cluster"]),
    ("Reading results back", ["read_results"]),
]

# The command each function runs (for keywords described only by the command's --help).
COMMANDS = {"embed": "embed", "zeroshot": "zeroshot", "prompts": "prompts", "probe": "probe", "compare": "compare",
            "inspect": "inspect", "attack": "attack typographic", "retrieval": "retrieval", "search": "search",
            "similar": "similar", "cluster": "cluster"}

# Keywords of one function that neither its docstring nor its command's --help describes.
EXTRA = {"read_results": {"folders": "Results store folders (written by `.save(folder)` or the CLI's `--results`)."}}

# Keywords shared by many functions, described once (used where a docstring does not describe them itself).
SHARED = {
    "model": "A model from `cliplab.load_model`, or a model name (the CLI's `--model`).",
    "dataset": "A dataset from `cliplab.load_dataset`, or a dataset spec (the CLI's `--dataset`).",
    "seed": "The random seed; the CLI's `--seed`.",
    "pretrained": "With a model given by name: its pretrained tag or checkpoint (see `load_model`).",
    "device": "With a model given by name: `\"cpu\"`, `\"cuda\"`, ... (see `load_model`).",
    "precision": "With a model given by name: `\"fp32\"`, `\"amp\"`, `\"bf16\"`, ... (see `load_model`).",
    "backend": "With a model given by name: `\"auto\"`, `\"torch\"` or `\"openvino\"` (see `load_model`).",
    "split": "With a dataset spec: the split (default: `test` for named datasets).",
    "data_root": "With a dataset spec: where torchvision datasets are (see `load_dataset`).",
    "limit": "A seeded random subset of `limit` images (of a spec or of a loaded dataset).",
    "classnames": "With a dataset spec: a class names file (see `load_dataset`).",
    "cache_dir": "The cache (default: `$CLIPLAB_CACHE_DIR`, else the user cache dir); the CLI's `--cache-dir`.",
    "batch_size": "Images per batch; the CLI's `--batch-size`.",
    "workers": "DataLoader worker processes (default: chosen for the machine); the CLI's `--workers`.",
    "no_cache": "Ignore the embedding cache; the CLI's `--no-cache`.",
    "pipeline": "`\"pil\"`, `\"tensor\"` or `\"auto\"`: the image pipeline; the CLI's `--pipeline`.",
    "quiet": "No progress bars and no notes (warnings still show).",
}


def rst_to_md(text: str) -> str:
    """Inline reST of the docstrings as Markdown: roles as code (API functions linked), double backquotes single."""
    def role(m: re.Match) -> str:
        target = m.group(2)
        short = target.split(".")[-1] if m.group(1) == "~" else target
        name = target.split(".")[-1]
        if name in api.__all__ and target in (name, f"cliplab.{name}"):
            return f"[`cliplab.{name}`](#{name.replace('_', '-')})"
        return f"`{short}`"

    text = re.sub(r":(?:func|class|mod|meth|attr|exc):`(~?)([^`]+)`", role, text)
    return text.replace("``", "`")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def sections(doc: str) -> dict[str, list[str]]:
    """A numpydoc docstring by section ('' is the text before the first section)."""
    out: dict[str, list[str]] = {"": []}
    current, lines, i = "", doc.splitlines(), 0
    while i < len(lines):
        if i + 1 < len(lines) and lines[i].strip() and re.fullmatch(r"-{3,}", lines[i + 1].strip()):
            current = lines[i].strip()
            out[current] = []
            i += 2
            continue
        out[current].append(lines[i])
        i += 1
    return out


def entries(lines: list[str]) -> list[tuple[list[str], str, str]]:
    """``name[, name...] [: type]`` lines with their indented descriptions: (names, type, description)."""
    out: list[tuple[list[str], str, list[str]]] = []
    for line in lines:
        if line.strip() and not line.startswith(" "):
            names, _, typ = line.partition(" : ")
            out.append(([n.strip() for n in names.split(",") if n.strip()], typ.strip(), []))
        elif line.strip() and out:
            out[-1][2].append(line.strip())
    return [(names, typ, " ".join(desc)) for names, typ, desc in out]


def cli_flags(command: str | None) -> dict[str, tuple[str, str]]:
    """keyword -> (the command's flag, its help text), from the Typer app."""
    if not command:
        return {}
    import typer
    from cliplab.cli import app

    cmd = typer.main.get_command(app)
    for word in command.split():
        cmd = cmd.commands[word]
    out = {}
    for p in cmd.params:
        longs = [o for o in p.opts if o.startswith("--")]
        if longs and p.name:
            out[longs[0][2:].replace("-", "_")] = (longs[0], " ".join((p.help or "").split()))
    return out


def default_text(p: inspect.Parameter) -> str:
    if p.kind is p.VAR_POSITIONAL:
        return f"`*{p.name}`"
    if p.default is p.empty:
        return "required"
    return f"`{p.default!r}`"


def signature_parts(sig: inspect.Signature) -> tuple[list[str], str]:
    """The parameters as written in code (annotations unquoted, defaults), and `` -> return``."""
    parts, star = [], False
    for p in sig.parameters.values():
        if p.name == "self":
            continue
        ann = f": {p.annotation}" if p.annotation is not p.empty else ""
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}{ann}")
            star = True
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(f"{p.name}{ann}" + (f" = {p.default!r}" if p.default is not p.empty else ""))
    ret = f" -> {sig.return_annotation}" if sig.return_annotation is not sig.empty else ""
    return parts, ret


def signature_text(name: str, fn) -> str:
    """``cliplab.name(...)`` with annotations and defaults, wrapped at 100 characters."""
    parts, ret = signature_parts(inspect.signature(fn))
    lines, line = [], f"cliplab.{name}("
    for i, part in enumerate(parts):
        piece = part + (", " if i < len(parts) - 1 else ")" + ret)
        if len(line) + len(piece.rstrip()) > 100:
            lines.append(line.rstrip())
            line = "    "
        line += piece
    lines.append(line.rstrip())
    return "\n".join(lines)


def example_text(lines: list[str]) -> str:
    """Doctest lines as a code block: outputs become comments on the line before."""
    code: list[str] = []
    for line in lines:
        if line.startswith(">>> ") or line.startswith("... "):
            code.append(line[4:])
        elif line.strip() and code:
            code[-1] += f"  # {line.strip()}"
    return "\n".join(code)


def function_section(name: str, undocumented: list[str]) -> str:
    fn = getattr(api, name)
    doc = inspect.getdoc(fn) or ""
    parts = sections(doc)
    sig = inspect.signature(fn)
    params = list(sig.parameters)
    out = [f'<a id="{name.replace("_", "-")}"></a>', f"### `cliplab.{name}`", "",
           "```python", signature_text(name, fn), "```", "",
           rst_to_md("\n".join(parts[""]).strip()), ""]
    documented = entries(parts.get("Parameters", []))
    seen = [n for names, _, _ in documented for n in names]
    unknown = [n for n in seen if n not in params]
    if unknown:
        undocumented.append(f"{name}: the docstring describes {unknown}, which the signature does not have")
    rows = []
    for names, typ, desc in documented:
        names = [n for n in names if n in params]
        if names:
            text = (f"*{typ}.* " if typ else "") + desc
            rows.append((names, rst_to_md(text)))
    summary = "\n".join(parts[""])
    flags = cli_flags(COMMANDS.get(name))
    for p in [p for p in params if p not in seen]:
        host = next((r for r in rows if f"`{p}`" in r[1]), None)
        if p in EXTRA.get(name, {}):
            rows.append(([p], EXTRA[name][p]))
        elif p in SHARED:
            rows.append(([p], SHARED[p]))
        elif p in flags and flags[p][1]:  # the command's --help says what it is
            rows.append(([p], f"The CLI's `{flags[p][0]}`: {flags[p][1]}"))
        elif host is not None:  # described inside another keyword's entry (``aggregate`` in ``descriptions``)
            host[0].append(p)
        elif f"``{p}``" in summary:
            rows.append(([p], "See above."))
        elif p in flags:
            rows.append(([p], f"The CLI's `{flags[p][0]}`."))
        else:
            rows.append(([p], ""))
            undocumented.append(f"{name}: keyword {p!r} is not described")
    if rows:
        out += ["| keyword = default | |", "|---|---|"]
        for names, text in rows:
            keys = "<br>".join(f"`{n}` = {default_text(sig.parameters[n])}" if sig.parameters[n].kind is not
                               inspect.Parameter.VAR_POSITIONAL else default_text(sig.parameters[n]) for n in names)
            out.append(f"| {keys} | {cell(text)} |")
        out.append("")
    returns = entries(parts.get("Returns", []))
    if returns:
        names, _, desc = returns[0]
        kind = ", ".join(names)
        out += [f"**Returns** `{kind}`" + (f": {rst_to_md(desc)}" if desc else ""), ""]
    elif sig.return_annotation is not sig.empty:
        out += [f"**Returns** `{sig.return_annotation}`", ""]
    example = example_text(parts.get("Examples", []))
    if example:
        out += ["```python", example, "```", ""]
    return "\n".join(out)


def functions_region() -> tuple[str, list[str]]:
    listed = [n for _, names in GROUPS for n in names]
    missing = sorted(set(api.__all__) - set(listed))
    extra = sorted(set(listed) - set(api.__all__))
    if missing or extra:
        raise SystemExit(f"docs/make_api.py GROUPS out of date: missing {missing}, not in cliplab.api {extra}")
    undocumented: list[str] = []
    out = []
    for title, names in GROUPS:
        out += [f"## {title}", ""]
        out += [function_section(n, undocumented) for n in names]
    return "\n".join(out).rstrip() + "\n", undocumented


def member_text(owner: type, name: str) -> str:
    obj = inspect.getattr_static(owner, name)
    if isinstance(obj, property):
        head, doc = f"`.{name}`", inspect.getdoc(obj.fget)
    else:
        parts, ret = signature_parts(inspect.signature(obj))
        head, doc = f"`.{name}({', '.join(parts)}){ret}`", inspect.getdoc(obj)
    return f"- {head}: {rst_to_md(' '.join((doc or '').split()))}"


def results_region() -> str:
    out = ["Every study result (the `Notebook` mixin, `cliplab/report/notebook.py`):", ""]
    out += [member_text(Notebook, n) for n in ("metrics", "to_json", "to_parquet", "save", "figures")]
    out += ["", "`cliplab.zeroshot` results (`ZeroShotRun`) also have:", ""]
    out += [member_text(ZeroShotRun, n) for n in ("predictions", "predictions_for")]
    return "\n".join(out) + "\n"


def fill(page: str, name: str, body: str) -> str:
    start, end = f"<!-- api:{name} -->", f"<!-- /api:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(page):
        raise SystemExit(f"{PAGE} has no {start} ... {end} region")
    return pattern.sub(lambda _: f"{start}\n{body}{end}", page)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when docs/api.md is out of date")
    args = parser.parse_args()
    functions, undocumented = functions_region()
    page = PAGE.read_text(encoding="utf-8")
    new = fill(fill(page, "functions", functions), "results", results_region())
    for line in undocumented:
        print(f"undocumented: {line}", file=sys.stderr)
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
