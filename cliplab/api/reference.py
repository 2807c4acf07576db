"""The Python API reference, written from the study declarations (the same ones the functions are made from):
one Markdown section per function, with its signature, every keyword with its default and description, what it
returns and an example. ``docs/make_api.py`` writes these sections into docs/api.md and checks that the page
matches; a study registered anywhere gets its section the same way."""
from __future__ import annotations

import inspect
import re

from cliplab.api.doors import function, signature
from cliplab.params import Param, Spelling, render
from cliplab.registry import Study, studies

GROUP_ORDER = ("Models, datasets and embeddings", "Classification studies", "Retrieval studies", "Studies")


def md(text: str) -> str:
    """Inline reST of the declarations (``code``, :func:`cliplab.x`) as Markdown."""
    def role(m: re.Match) -> str:
        target = m.group(2)
        name = target.split(".")[-1]
        return f"[`cliplab.{name}`](#{name.replace('_', '-')})" if target in (name, f"cliplab.{name}") else \
            f"`{name if m.group(1) == '~' else target}`"

    text = re.sub(r":(?:func|class|mod|meth|attr|exc):`(~?)([^`]+)`", role, text)
    return text.replace("``", "`")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def signature_text(name: str, sig: inspect.Signature) -> str:
    """``cliplab.name(...)`` with annotations and defaults, wrapped at 100 characters."""
    parts, star = [], False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        ann = f": {p.annotation}" if p.annotation is not p.empty else ""
        parts.append(f"{p.name}{ann}" + (f" = {p.default!r}" if p.default is not p.empty else ""))
    ret = f" -> {sig.return_annotation}" if sig.return_annotation is not sig.empty else ""
    lines, line = [], f"cliplab.{name}("
    for i, part in enumerate(parts):
        piece = part + (", " if i < len(parts) - 1 else ")" + ret)
        if len(line) + len(piece.rstrip()) > 100:
            lines.append(line.rstrip())
            line = "    "
        line += piece
    lines.append(line.rstrip())
    return "\n".join(lines)


def _default(p: Param, sig: inspect.Signature) -> str:
    given = sig.parameters[p.api_name].default
    return "required" if given is inspect.Parameter.empty else f"`{given!r}`"


def function_section(study: Study) -> str:
    """The Markdown section of one API function."""
    sig, params = signature(study)
    spell = Spelling(study.all_params(), "api")
    out = [f'<a id="{study.name.replace("_", "-")}"></a>', f"### `cliplab.{study.name}`", "", "```python",
           signature_text(study.name, sig), "```", "", md(render(study.summary, spell))]
    if study.description:
        out += ["", md(render(study.description, spell))]
    out += ["", "| keyword = default | |", "|---|---|"]
    for p in params:
        text = render(p.help, spell)
        bounds = p.bounds_text()
        if bounds and bounds not in text:
            text += f" ({bounds})"
        cli = "" if "cli" not in p.doors or "cli" not in study.doors else \
            f" The CLI's `{p.cli_flag if not p.argument else (p.metavar or p.name.upper())}`."
        out.append(f"| `{p.api_name}` = {_default(p, sig)} | {cell(md(text) + cli)} |")
    ret = sig.return_annotation
    out += ["", f"**Returns** `{ret}`" + (f": {md(render(study.returns, spell))}" if study.returns else ""), ""]
    if study.example:
        out += ["```python", study.example.strip(), "```", ""]
    return "\n".join(out)


def functions_region(extra: dict[str, str] | None = None) -> str:
    """Every API function's section, by group (``extra``: hand-written sections by group, e.g. read_results)."""
    from cliplab.studies import discover

    discover()
    groups: dict[str, list[str]] = {}
    for study in studies():
        if "api" in study.doors:
            groups.setdefault(study.group, []).append(function_section(study))
    for group, text in (extra or {}).items():
        groups.setdefault(group, []).append(text)
    order = [g for g in GROUP_ORDER if g in groups] + sorted(set(groups) - set(GROUP_ORDER))
    out = []
    for group in order:
        out += [f"## {group}", "", *groups[group]]
    return "\n".join(out).rstrip() + "\n"


__all__ = ["function_section", "functions_region", "function"]
