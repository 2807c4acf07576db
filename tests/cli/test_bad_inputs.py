"""Every bad input is one `error:` line naming the argument, exit code 2, no traceback — checked for every command
with a table of bad arguments. Nothing is computed (or trained) before the arguments are checked."""
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cliplab.cli import app
from cliplab.cli.options import handle_errors

runner = CliRunner()


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "a-folder").mkdir()
    (d / "a-file.txt").write_text("x")
    (d / "broken.json").write_text('{"set": ["a photo of a {}."')
    (d / "not-a-list.json").write_text('{"set": "a photo of a {}."}')
    (d / "img.png").write_bytes(b"")
    return d


def cases(d):
    folder, file = str(d / "a-folder"), str(d / "a-file.txt")
    under_file = str(d / "a-file.txt" / "out.json")
    return [
        (["zeroshot", "-o", folder], "--output"),
        (["zeroshot", "-o", under_file], "--output"),
        (["zeroshot", "-o", str(d / "r.txt")], "--output"),
        (["zeroshot", "--predictions", folder], "--predictions"),
        (["zeroshot", "--predictions", str(d / "p.xlsx")], "--predictions"),
        (["zeroshot", "--results", file], "--results"),
        (["zeroshot", "--results", str(d / "a-file.txt" / "store")], "--results"),
        (["zeroshot", "--results-format", "xml", "--results", folder], "--results-format"),
        (["zeroshot", "--templates", str(d / "broken.json")], "--templates"),
        (["zeroshot", "--templates", str(d / "not-a-list.json")], "--templates"),
        (["zeroshot", "--templates", "no placeholder"], "--templates"),
        (["zeroshot", "--device", "tpu"], "--device"),
        (["zeroshot", "--device", "cuda:0" if not _has_cuda() else "tpu"], "--device"),
        (["zeroshot", "--precision", "fp8"], "--precision"),
        (["zeroshot", "--limit", "0"], "--limit"),
        (["zeroshot", "--splt", "test"], "--splt"),
        (["prompts", "-o", folder], "--output"),
        (["prompts", "--templates", str(d / "broken.json")], "--templates"),
        (["probe", "-o", under_file], "--output"),
        (["probe", "--kshot", "1,x"], "--kshot"),
        (["probe", "--templates", str(d / "broken.json")], "--templates"),
        (["compare", "-o", str(d / "c.xlsx")], "--output"),
        (["compare", "--plot", str(d / "a-file.txt" / "bars")], "--plot"),
        (["inspect", str(d / "img.png"), "-o", str(d / "i.txt")], "--output"),
        (["inspect", str(d / "img.png"), "--figures", file], "--figures"),
        (["attack", "typographic", "--examples", str(d / "e.jpg")], "--examples"),
        (["attack", "typographic", "-o", folder], "--output"),
        (["retrieval", "--captions", str(d / "c.xlsx")], "--captions"),
        (["retrieval", "--failures", str(d / "f.svg")], "--failures"),
        (["search", "x", "-o", str(d / "x.txt")], "--output"),
        (["search", "x", "--grids", file], "--grids"),
        (["similar", "--grid", str(d / "g.jpg")], "--grid"),
        (["similar", "-o", under_file], "--output"),
        (["cluster", "-o", str(d / "x.xlsx")], "--output"),
        (["cluster", "--grid", folder], "--grid"),
        (["cluster", "--kmeans", "torch"], "--kmeans"),
        (["embed", "-o", str(d / "e.txt")], "--output"),
        (["report", folder, "-o", str(d / "r.pdf")], "--output"),
        (["report", folder, "-o", folder], "--output"),
        (["train", "--name", "x", "--output-dir", file], "--output-dir"),
        (["train"], "--name"),
        (["demo", "--output-dir", file], "--output-dir"),
    ]


def _has_cuda():
    import torch

    return torch.cuda.is_available()


def test_every_bad_argument_is_one_error_line(bad, tmp_path):
    """One table for all commands. A fresh, empty cache dir proves nothing was trained or embedded first."""
    cache = tmp_path / "untouched-cache"
    failures = []
    for args, flag in cases(bad):
        res = runner.invoke(app, args + ["--cache-dir", str(cache)] if args[0] not in ("report",) else args)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        ok = (res.exit_code == 2 and "Traceback" not in res.output and res.exception is None
              or isinstance(res.exception, SystemExit))
        ok = ok and res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0]
        if not ok:
            failures.append(f"{' '.join(args)} -> exit {res.exit_code}: {res.output[-300:]!r} {res.exception!r}")
    assert not failures, "\n".join(failures)
    assert not (cache / "models").exists() and not (cache / "embeddings").exists()


def test_a_real_process_prints_no_traceback(bad):
    proc = subprocess.run([sys.executable, "-m", "cliplab.cli", "cluster", "-o", str(bad / "x.xlsx")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: --output {bad / 'x.xlsx'}: cannot write .xlsx; use .csv or .parquet or .jsonl"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere; permission bits cannot be tested as root")
def test_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    res = runner.invoke(app, ["zeroshot", "-o", str(ro / "r.json")])
    assert res.exit_code == 2 and "no permission to write" in res.output


def test_file_system_errors_late_in_a_run_are_one_line_too(capsys):
    @handle_errors
    def late():
        raise PermissionError(13, "Permission denied", "/results/run.parquet")

    with pytest.raises(BaseException) as exc:  # typer.Exit(2)
        late()
    assert getattr(exc.value, "exit_code", None) == 2
    assert capsys.readouterr().err.strip() == "error: /results/run.parquet: Permission denied"


def test_version_and_help_texts_keep_brackets():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("cliplab ")
    env = {"COLUMNS": "250"}
    assert "{class: [description, ...]}" in runner.invoke(app, ["prompts", "--help"], env=env).output
    assert "shapes[:ATTRIBUTE]" in runner.invoke(app, ["zeroshot", "--help"], env=env).output
    assert "{family: [queries]}" in runner.invoke(app, ["search", "--help"], env=env).output
