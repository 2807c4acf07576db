"""The output guard: every path a run will write -- the files a user names and every file written beside them -- is
known before the work starts, and none of them may be an input of the run (a dataset's files, a caption, template,
class-name, query or model file, a results store it reads). A path that is an input is an error; an existing file
is replaced only as a named output is (a warning says so before any work), whether it was named or is written beside
a named one; a new file that the next run would read as an input (an image inside a dataset's folders, a row file
inside a results store) is an error too."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cliplab.errors import ParameterError
from cliplab.progress import warn

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
STORE_SUFFIXES = {".parquet", ".jsonl"}


@dataclass(frozen=True)
class Planned:
    """A path a run will write: ``param`` names the output it belongs to (the named file or one beside it);
    ``folder``: a folder the run writes files into."""
    path: Path
    param: str
    named: Path  # the path the user named
    folder: bool = False


@dataclass
class Inputs:
    """What a run reads: files (with what they are; lists of image files are kept as given and only looked at when
    an output could clash with them), and results stores it reads."""
    files: dict[str, str]
    image_lists: list[tuple[list[str], str]]
    store_dirs: set[str]
    folders: set[str] = None  # folders of images given as such (a dataset folder): nothing inside is listed

    @classmethod
    def empty(cls) -> "Inputs":
        return cls({}, [], set(), set())

    def add_file(self, path: str | os.PathLike, what: str) -> None:
        self.files.setdefault(os.path.normcase(os.path.abspath(path)), what)

    def add_images(self, paths: list[str], what: str) -> None:
        """A dataset's image files (millions, possibly: nothing is computed per file until needed)."""
        self.image_lists.append((paths, what))

    def named(self, basenames: set[str]) -> dict[str, str]:
        """Input files whose base name is one of ``basenames``: {path: what}."""
        out = {p: w for p, w in self.files.items() if os.path.basename(p) in basenames}
        for paths, what in self.image_lists:
            out.update((p, what) for p in paths if os.path.basename(p) in basenames)
        return out

    def image_dirs(self) -> set[str]:
        """The resolved folders that hold the datasets' images."""
        dirs = {_real(d) for paths, _ in self.image_lists for d in {os.path.dirname(p) for p in paths}}
        return dirs | {_real(d) for d in self.folders or ()}

    def add_path(self, path: str | os.PathLike, what: str) -> None:
        """A file, or every file of a folder (recursively), that the run reads."""
        if os.path.isfile(path):
            self.add_file(path, what)
        elif os.path.isdir(path):
            for dirpath, _, names in os.walk(path):
                for n in names:
                    self.add_file(os.path.join(dirpath, n), what)


def _real(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(path))


def check(planned: Iterable[Planned], inputs: Inputs, spell: Callable[[str], str] = lambda p: p,
          replace_warning: bool = True) -> None:
    """Refuse any planned path that is an input of the run, or that the next run would read as one; warn about
    existing files that will be replaced (once each, before any work)."""
    planned = list(planned)
    existing = [p for p in planned if p.path.exists()]  # a file that does not exist yet cannot be an input
    if existing:
        candidates = inputs.named({os.path.basename(_real(p.path)) for p in existing} | {p.path.name for p in existing})
        for p in existing:
            real = _real(p.path)
            same = [f for f in candidates if os.path.basename(f) in (os.path.basename(real), p.path.name)
                    and _real(f) == real]
            if same:
                raise ParameterError(p.param, p.named, f"{_which(p)} is an input of this run ({candidates[same[0]]}); "
                                     "give another name", quote=False)
    images = [p for p in planned if p.folder or p.path.suffix.lower() in IMAGE_SUFFIXES]
    image_dirs = inputs.image_dirs() if images else set()
    for p in planned:
        parent = _real(p.path if p.folder else p.path.parent)
        suffix = ".png" if p.folder else p.path.suffix.lower()
        if suffix in IMAGE_SUFFIXES and any(parent == d or parent.startswith(d + os.sep) for d in image_dirs):
            raise ParameterError(p.param, p.named, f"{_which(p)} would be written among the images of this run's "
                                 "dataset, and the next run would read it as one; write it elsewhere", quote=False)
        if suffix in STORE_SUFFIXES and parent in inputs.store_dirs:
            raise ParameterError(p.param, p.named, f"{_which(p)} would be written into a results store this run "
                                 "reads, and the next run would read it as rows; write it elsewhere", quote=False)
    for p in planned:
        if replace_warning and not p.folder and p.path.is_file():
            beside = "" if p.path == p.named else f" writes {p.path} beside it, which"
            warn(f"{spell(p.param)} {p.named}{beside} exists and will be replaced when this run finishes (give "
                 "another name to keep it)")


def _which(p: Planned) -> str:
    return "it" if p.path == p.named else f"{p.path} (written beside it)"


def dataset_inputs(inputs: Inputs, dataset, what: str = "an image of the dataset") -> None:
    """A loaded dataset's files: the file it was read from, its images (or shards), their folders."""
    spec = getattr(dataset, "spec", None)
    if isinstance(spec, str):
        local = spec.split("#", 1)[0]
        if os.path.isfile(local):
            inputs.add_file(local, f"the dataset file {local}")
    files = dataset.source.files()
    others = [f for f in files if os.path.splitext(f)[1].lower() not in IMAGE_SUFFIXES]  # shards, captions...
    if len(others) < len(files):  # the images: the source's own list when all are (not a million-path copy)
        skip = set(others)
        inputs.add_images(files if not others else [f for f in files if f not in skip], what)
    for f in others:
        inputs.add_file(f, f"a file of the dataset ({os.path.basename(f)})")


__all__ = ["Planned", "Inputs", "check", "dataset_inputs", "IMAGE_SUFFIXES"]
