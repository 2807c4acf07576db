"""Library errors name parameters, never CLI flags; each door spells them from the declarations (the CLI as
flags)."""
import ast
import importlib
import inspect
import pkgutil
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from cliplab.cli import app
from cliplab.errors import CliplabError, DatasetError, ModelLoadError, ParameterError

# Modules whose errors name parameters (the CLI's own modules, studies/, report/ and results/ are not swept yet).
def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [package] + [n for m in pkgutil.iter_modules(pkg.__path__) for n in
                        (_modules(f"{package}.{m.name}") if m.ispkg else [f"{package}.{m.name}"])]


# Every module of the library, i.e. everything but the CLI (which spells flags) and ``__main__`` entry points.
LIBRARY_MODULES = [m for m in _modules("cliplab") if not m.startswith("cliplab.cli") and not m.endswith("__main__")]

FLAG = re.compile(r"--[A-Za-z]")


def flags_in_raises(module) -> list[str]:
    """``file:line: text`` of every string in a ``raise`` statement that contains a flag: literals and f-string
    parts, and module-level string constants the statement uses (a hint shared by several messages)."""
    source = inspect.getsource(module)
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Raise):
            continue
        for sub in ast.walk(node):
            text = None
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                text = sub.value
            elif isinstance(sub, ast.Name) and isinstance(getattr(module, sub.id, None), str):
                text = getattr(module, sub.id)
            if text is not None and FLAG.search(text):
                found.append((sub.lineno, f"{module.__name__}:{sub.lineno}: {text!r}"))
    return [hit for _, hit in sorted(set(found))]


def test_library_raises_name_parameters_not_flags():
    found = [hit for name in LIBRARY_MODULES for hit in flags_in_raises(importlib.import_module(name))]
    assert not found, "library errors that name a CLI flag (use ParameterError and {p:name}):\n" + "\n".join(found)


def test_the_sweep_sees_flags():
    """The sweep is not vacuous: a module with a flag in a raise is caught (literal, f-string part, constant)."""
    import types

    mod = types.ModuleType("fake_errors")
    mod.HINT = "pass --model CONFIG.json"
    src = ("def f(x):\n    raise ValueError(f'--device {x}: no')\n"
           "def g():\n    raise ValueError('x: ' + HINT)\n"
           "def h(x):\n    raise ValueError(f'bad {x}; use a value - not a flag -- fine')\n")
    hits = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Raise):
            for sub in ast.walk(node):
                text = sub.value if isinstance(sub, ast.Constant) and isinstance(sub.value, str) else \
                    getattr(mod, sub.id, None) if isinstance(sub, ast.Name) else None
                if isinstance(text, str) and FLAG.search(text):
                    hits.append(text)
    assert hits == ["--device ", "pass --model CONFIG.json"]


def cli_error(args, tmp_path) -> str:
    res = CliRunner().invoke(app, args + ["--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_device_error_python_names_the_parameter_cli_the_flag(tmp_path):
    from cliplab.models import resolve_device

    with pytest.raises(ModelLoadError) as info:
        resolve_device("tpu")
    assert isinstance(info.value, ParameterError) and info.value.param == "device"
    assert str(info.value) == "device tpu: not a device name; use cpu, cuda, cuda:1 or mps"
    assert cli_error(["zeroshot", "--device", "tpu"], tmp_path) == \
        "error: --device tpu: not a device name; use cpu, cuda, cuda:1 or mps"


def test_split_folders_error_python_names_the_parameter_cli_the_flag(tmp_path):
    from cliplab.data import open_dataset

    root = tmp_path / "eurosat"
    for split in ("test", "validation"):
        (root / split / "red").mkdir(parents=True)
    with pytest.raises(DatasetError) as info:
        open_dataset(str(root), cache_dir=tmp_path)
    assert isinstance(info.value, ParameterError) and info.value.param == "split"
    assert str(info.value).endswith("not classes: choose one with split (e.g. split test)")
    assert cli_error(["zeroshot", "--dataset", str(root)], tmp_path) == \
        f"error: folder {root} holds split folders (test, validation), not classes: choose one with --split " \
        "(e.g. --split test)"


def test_parameter_with_another_flag_name_python_and_cli(tmp_path):
    """A parameter is named once (the library's name is the Python keyword); the CLI spells it as its declared flag:
    ``k`` is ``--topk`` for similar, ``data_root`` is ``--image-root`` (Python ``image_root``) for retrieval."""
    from cliplab.attacks.typographic import choose_targets
    from cliplab.params import Spelling
    from cliplab.registry import get
    from cliplab.studies import discover

    discover()
    with pytest.raises(CliplabError) as info:
        choose_targets(np.arange(4) % 2, 2, "sideways")
    assert str(info.value) == "target 'sideways': choose one of random, next, most-confused"
    assert info.value.render(Spelling(get("attack").all_params(), "cli")) == \
        "--target 'sideways': choose one of random, next, most-confused"
    assert cli_error(["similar", "--descriptor", "sum"], tmp_path) == \
        "error: --descriptor 'sum': choose one of global, mac, rmac, gem"
    assert cli_error(["similar", "--descriptor", "rmca"], tmp_path) == \
        "error: --descriptor 'rmca': choose one of global, mac, rmac, gem (did you mean 'rmac'?)"
    assert cli_error(["similar", "--topk", "0"], tmp_path) == "error: --topk 0: must be at least 1"
    err = ParameterError("data_root", "/nowhere", "folder not found", quote=False)
    retrieval = get("retrieval").all_params()
    assert err.render(Spelling(retrieval, "cli")) == "--image-root /nowhere: folder not found"
    assert err.render(Spelling(retrieval, "api")) == "image_root /nowhere: folder not found"
