"""The layout holds by construction: layers import downward only (no report <-> studies cycle), nothing outside the
backends branches on a backend's name, one public ``load_model``, and the declarations (hence ``cliplab --help``)
load no heavy module."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import cliplab

PACKAGE = Path(cliplab.__file__).resolve().parent

# lower number = lower layer; a module may import (at module level) only its own layer or lower ones
LAYERS = {
    "errors": 0, "version": 0, "io": 0, "paths": 0, "progress": 0, "params": 0, "quarantine": 0,
    "files": 0, "threads": 0,
    "inputs": 1, "prompts": 2, "models": 2, "data": 2,
    "embed": 3, "tasks": 3, "attacks": 3, "index": 3, "train": 3, "fit_memo": 3,
    "results": 4, "registry": 4, "report": 5, "studies": 6, "api": 7, "cli": 7, "__init__": 8,
}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages([str(PACKAGE)], prefix="cliplab.")
            if not info.name.endswith("__main__")]


def top_level_imports(module: str) -> list[tuple[int, str]]:
    """(line, imported cliplab module) of the module-level imports (not those inside functions or TYPE_CHECKING)."""
    path = Path(importlib.util.find_spec(module).origin)
    tree = ast.parse(path.read_text())
    out = []

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cliplab"):
                out.append((node.lineno, node.module))
            elif isinstance(node, ast.Import):
                out.extend((node.lineno, a.name) for a in node.names if a.name.startswith("cliplab"))
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)

    visit(tree.body)
    return out


def test_layers_import_downward_only():
    bad = [f"{m}:{line} imports {target}" for m in modules() if not m.endswith("__main__")
           for line, target in top_level_imports(m) if target != "cliplab" and layer(target) > layer(m)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_layer_check_sees_an_upward_import():
    assert layer("cliplab.report.html") < layer("cliplab.studies.zeroshot")  # the old report -> studies cycle
    assert layer("cliplab.tasks.ranking") < layer("cliplab.index") + 1


def test_no_backend_name_is_branched_on_outside_the_backends():
    names = {"openvino", "torch", "pytorch"}
    found = []
    for m in modules():
        if m.startswith("cliplab.models.backends"):
            continue
        path = Path(importlib.util.find_spec(m).origin)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                if any(isinstance(c, str) and c in names for c in consts):
                    found.append(f"{m}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_one_public_load_model():
    public = [m for m in modules() if not m.startswith("cliplab.api")
              and "load_model" in vars(importlib.import_module(m))]
    assert public == [], public
    assert cliplab.load_model.__module__ == "cliplab.api"


@pytest.mark.parametrize("entry", ["import cliplab", "import cliplab.cli",
                                   "from cliplab.studies import discover; discover()"])
def test_declarations_and_the_cli_load_no_heavy_module(entry):
    heavy = ["torch", "torchvision", "open_clip", "sklearn", "scipy", "faiss", "matplotlib.pyplot", "transformers"]
    code = f"import sys\n{entry}\nprint([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{entry} imports {out.stdout.strip()}"
