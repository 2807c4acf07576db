"""WebDataset tar shards, read in place: each image is one tar member's bytes, found by seeking (the shards are
indexed once per load, never extracted). Also CLIP_benchmark's layout of them: ``ROOT/<split>/nshards.txt`` +
``0.tar``..., ``ROOT/classnames.txt``, ``ROOT/zeroshot_classification_templates.txt``, ``ROOT/dataset_type.txt``.

Members are grouped into samples by key (the member name up to the first dot of its file name): one image
(``key.jpg``, ``.jpeg``, ``.png``, ``.webp``... as folders accept), an optional ``key.cls`` (class number, or class
name), ``key.txt`` (a caption; in CLIP_benchmark retrieval sets one caption per line) and any other members
(``key.json``...), which are not read. An image's cache key is the content hash of its bytes, exactly as for the
same file on disk, so a set embedded as a folder is not embedded again as shards.
"""
from __future__ import annotations

import contextvars
import json
import os
import posixpath
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cliplab.data.base import ImageDataset
from cliplab.data.columns import encode_labels
from cliplab.data.filehash import memoized
from cliplab.data.folder import IMAGE_EXTENSIONS, image_files
from cliplab.data.imageio import BadImage, decode_rgb
from cliplab.data.remote import RangeReader, Store
from cliplab.data.sources import ImageSource
from cliplab.data.splits import SplitError, is_split_name
from cliplab.errors import DatasetParameterError
from cliplab.files import UserFile
from cliplab.io import hash_bytes, hash_json

IMAGE_SUFFIXES = tuple(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
NSHARDS = "nshards.txt"
LAYOUT_FILES = ("dataset_type.txt", "classnames.txt", "zeroshot_classification_templates.txt")
DATASET_TYPES = ("classification", "retrieval")
PREFIX = "wds:"
PATTERN = re.compile(r"[{*?\[]")  # brace or glob characters: a shard pattern


@dataclass(frozen=True)
class Member:
    """A regular file inside a shard: its name and where its bytes are."""

    name: str
    offset: int
    size: int


@dataclass
class Sample:
    key: str
    image: Member
    cls: str | None = None
    txt: str | None = None


def expand_braces(pattern: str) -> list[str]:
    """Brace expansion as in shells and webdataset: ``s-{000..002}.tar`` (zero-padded ranges), ``{a,b}`` lists,
    several and nested groups; a group that is neither stays as it is."""
    for found in re.finditer(r"\{([^{}]*)\}", pattern):
        body = found.group(1)
        numbers = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
        if numbers:
            lo, hi = numbers.groups()
            padded = any(len(b.lstrip("-")) > 1 and b.lstrip("-").startswith("0") for b in (lo, hi))
            width = max(len(lo), len(hi)) if padded else 0
            step = 1 if int(hi) >= int(lo) else -1
            choices = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
        elif "," in body:
            choices = body.split(",")
        else:
            continue
        head, tail = pattern[:found.start()], pattern[found.end():]
        return list(dict.fromkeys(x for c in choices for x in expand_braces(head + c + tail)))
    return [pattern]


def natural_key(text: str) -> list:
    """Sort key putting ``2.tar`` before ``10.tar``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def is_webdataset_folder(path: Path) -> bool:
    """Whether a local folder is tar shards (its own or in split folders, or CLIP_benchmark's layout) rather than an
    image folder: a folder that holds images stays an image folder."""
    if any((path / f).is_file() for f in (*LAYOUT_FILES, NSHARDS)):
        return True
    subs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if any((d / NSHARDS).is_file() for d in subs):
        return True
    return any(_holds_tar(str(d)) for d in (path, *subs)) and not image_files(str(path))


def _holds_tar(folder: str) -> bool:
    """Whether ``folder`` holds a ``.tar`` file (by name first: no stat for the other files, which may be millions)."""
    try:
        with os.scandir(folder) as entries:
            return any(e.name.endswith(".tar") and len(e.name) > 4 and e.is_file() for e in entries)
    except OSError:
        return False


class TarSource(ImageSource):
    """Images that are members of tar shards. ``keys()`` reads every image member once (remembered per shard in
    the file-hash memo while the shard's size, mtime and inode stay the same); ``load(i)`` reads one member."""

    def __init__(self, store: Store, shards: list[str], items: list[tuple[int, Member]]):
        self.store, self.shards, self.items = store, shards, items
        self.reader = RangeReader(store)
        self.key_errors: dict[int, str] = {}
        self._keys: list[str | None] | None = None

    def files(self) -> list[str]:
        """The shard files, when they are local."""
        return [s for s in self.shards if os.path.isfile(s)]

    def __len__(self) -> int:
        return len(self.items)

    def id(self, i: int) -> str:
        shard, member = self.items[i]
        return f"{self.store.location(self.shards[shard])}/{member.name}"

    def _read(self, i: int) -> bytes:
        shard, member = self.items[i]
        return self.reader.read(self.shards[shard], member.offset, member.size)

    def _shard_hashes(self, shard: int, positions: list[int]) -> dict[str, str]:
        """{member offset: "f:" + content hash, or "!" + why it cannot be read} for the images of one shard."""
        def compute() -> str:
            out = {}
            for i in positions:
                try:
                    out[str(self.items[i][1].offset)] = "f:" + hash_bytes(self._read(i))
                except OSError as exc:
                    out[str(self.items[i][1].offset)] = f"!unreadable shard member: {exc}"
            return json.dumps(out)

        path = self.shards[shard]
        table = json.loads(compute() if self.store.remote else memoized("tar-image-keys", path, compute))
        if any(str(self.items[i][1].offset) not in table for i in positions):  # indexed otherwise when memoised
            table = json.loads(compute())
        return table

    def keys(self) -> list[str | None]:
        if self._keys is None:
            by_shard: dict[int, list[int]] = {}
            for i, (shard, _) in enumerate(self.items):
                by_shard.setdefault(shard, []).append(i)
            with ThreadPoolExecutor(max_workers=8) as pool:  # each task in a copy of this context: the memo
                tasks = [pool.submit(contextvars.copy_context().run, self._shard_hashes, s, by_shard[s])
                         for s in by_shard]
                tables = dict(zip(by_shard, (t.result() for t in tasks)))
            keys: list[str | None] = []
            for i, (shard, member) in enumerate(self.items):
                value = tables[shard][str(member.offset)]
                if value.startswith("!"):
                    self.key_errors[i] = value[1:]
                    keys.append(None)
                else:
                    keys.append(value)
            self._keys = keys
        return self._keys

    def load(self, i: int) -> Image.Image:
        try:
            data = self._read(i)
        except OSError as exc:
            raise BadImage(f"unreadable shard member: {exc}") from None
        return decode_rgb(data)


def _sample_key(name: str) -> tuple[str, str] | None:
    """(key, suffix) of a member name: ``dir/abc.seg.png`` -> (``dir/abc``, ``seg.png``); None without a dot."""
    name = name[2:] if name.startswith("./") else name
    folder, base = posixpath.split(name)
    if "." not in base or base.startswith("."):
        return None
    stem, suffix = base.split(".", 1)
    return posixpath.join(folder, stem), suffix.lower()


def index_shard(store: Store, path: str, spec: str) -> list[Sample]:
    """The samples of one shard in member order, with their ``.cls`` and ``.txt`` texts; a shard that is not a
    complete uncompressed tar is a :class:`DatasetParameterError` naming it."""
    where = store.location(path)

    def bad(why: str) -> DatasetParameterError:
        return DatasetParameterError("dataset", spec, f"shard {where}: {why}", quote=False)

    try:
        with store.open(path) as fh:
            try:
                tar = tarfile.open(fileobj=fh, mode="r:")
                members = [Member(i.name, i.offset_data, i.size) for i in iter(tar.next, None) if i.isreg()]
                end = tar.offset
            except tarfile.TarError as exc:
                if str(exc) == "unexpected end of data":  # a member's data runs past the end of the file
                    raise bad("truncated tar (a member runs past the end of the file)") from None
                raise bad(f"not a readable uncompressed tar file ({exc})") from None
            fh.seek(end)
            if fh.read(512).strip(b"\0"):  # tarfile stops quietly at a damaged header: the rest would be lost
                raise bad(f"no valid tar header at byte {end} (truncated or corrupt tar)")
            samples = _group(members, bad)
            for sample, texts in samples:
                for suffix in ("cls", "txt"):
                    if suffix in texts:
                        fh.seek(texts[suffix].offset)
                        try:
                            setattr(sample, suffix, fh.read(texts[suffix].size).decode("utf-8-sig"))
                        except UnicodeDecodeError:
                            raise bad(f"{texts[suffix].name} is not UTF-8 text") from None
    except FileNotFoundError:
        raise bad("not found") from None
    except OSError as exc:
        raise bad(f"cannot be read ({exc})") from None
    return [sample for sample, _ in samples]


def _group(members: list[Member], bad) -> list[tuple[Sample, dict[str, Member]]]:
    groups: dict[str, dict[str, Member]] = {}
    for m in members:
        parsed = _sample_key(m.name)
        if parsed is None:
            continue
        key, suffix = parsed
        group = groups.setdefault(key, {})
        if suffix in group:
            raise bad(f"holds {key}.{suffix} twice")
        group[suffix] = m
    out = []
    for key, group in groups.items():
        images = [s for s in group if s in IMAGE_SUFFIXES]
        if len(images) != 1:
            names = ", ".join(group[s].name for s in group)
            raise bad(f"sample {key!r} has {'no image' if not images else f'{len(images)} images'} ({names}); each "
                      f"sample needs one image ({', '.join('.' + s for s in IMAGE_SUFFIXES)})")
        out.append((Sample(key, group[images[0]]), {s: group[s] for s in ("cls", "txt") if s in group}))
    return out


def _shards_of(store: Store, folder: str, spec: str) -> list[str]:
    """The shards directly in ``folder``: ``0.tar`` ... ``N-1.tar`` when it has ``nshards.txt``, else its ``.tar``
    files in natural order."""
    count_file = store.join(folder, NSHARDS)
    if store.isfile(count_file):
        text = layout_file(store, count_file, spec).text().strip()
        if not text.isdigit() or int(text) == 0:
            raise DatasetParameterError("dataset", spec, f"{store.location(count_file)} should hold the number of "
                                        f"shards, not {text[:40]!r}", quote=False)
        shards = [store.join(folder, f"{i}.tar") for i in range(int(text))]
        missing = [s for s in shards if not store.isfile(s)]
        if missing:
            raise DatasetParameterError("dataset", spec, f"{store.location(count_file)} says {text} shards, but "
                                        f"{len(missing)} are missing (e.g. {store.location(missing[0])})", quote=False)
        return shards
    return sorted((p for p in store.listdir(folder) if p.endswith(".tar") and store.isfile(p)), key=natural_key)


@dataclass
class _Found:
    shards: list[str]
    name: str
    split: str
    layout_root: str | None = None  # CLIP_benchmark's ROOT, whose text files describe the set


def _find(store: Store, path: str, spec: str, split: str | None) -> _Found:
    where = store.location(path)

    def whole(found: _Found) -> _Found:  # a set without splits, or one split folder named directly
        if split not in (None, "all", found.split):
            raise SplitError(f"webdataset {where}", split, [] if found.split == "all" else [found.split])
        return found

    if store.isdir(path):
        own = _shards_of(store, path, spec)
        parent = store.parent(path)
        if own and any(store.isfile(store.join(parent, f)) for f in LAYOUT_FILES):  # ROOT/<split> of CLIP_benchmark
            return whole(_Found(own, store.name(parent), store.name(path), parent))
        if own:
            named_split = is_split_name(store.name(path))
            return whole(_Found(own, store.name(parent) if named_split else store.name(path),
                                store.name(path) if named_split else "all"))
        splits = [store.name(d) for d in store.listdir(path) if store.isdir(d) and _shards_of(store, d, spec)]
        if not splits:
            raise DatasetParameterError("dataset", spec, f"no .tar shards in {where} or in its split folders",
                                        quote=False)
        if split is None:
            raise DatasetParameterError("split", None, f"webdataset {where} holds splits ({', '.join(splits)}): "
                                        f"choose one with {{p:split}} (e.g. {{p:split}} "
                                        f"{'test' if 'test' in splits else splits[0]})", prefix=False)
        if split not in splits:
            raise SplitError(f"webdataset {where}", split, splits)
        layout = any(store.isfile(store.join(path, f)) for f in LAYOUT_FILES) \
            or any(store.isfile(store.join(path, s, NSHARDS)) for s in splits)
        return _Found(_shards_of(store, store.join(path, split), spec), store.name(path), split,
                      path if layout else None)
    if store.isfile(path):
        if not path.endswith(".tar"):
            raise DatasetParameterError("dataset", spec, f"{where} is not a .tar shard", quote=False)
        return whole(_Found([path], posixpath.splitext(store.name(path))[0], "all"))
    if PATTERN.search(path):
        shards = []
        for part in expand_braces(path):
            matches = store.glob(part) if PATTERN.search(part) else ([part] if store.isfile(part) else [])
            if not matches:
                raise DatasetParameterError("dataset", spec, f"no shard matches {store.location(part)}", quote=False)
            shards.extend(sorted(matches, key=natural_key))
        if not all(s.endswith(".tar") for s in shards):
            bad = next(s for s in shards if not s.endswith(".tar"))
            raise DatasetParameterError("dataset", spec, f"{store.location(bad)} is not a .tar shard", quote=False)
        return whole(_Found(list(dict.fromkeys(shards)), store.name(store.parent(shards[0])), "all"))
    raise DatasetParameterError("dataset", spec, f"no such shard, shard pattern or folder: {where}", quote=False)


def layout_file(store: Store, path: str, spec: str) -> UserFile:
    """A text file of a shard folder (``nshards.txt``, CLIP_benchmark's ``classnames.txt``...), read through the
    one reader."""
    location = store.location(path)
    return UserFile(path, "dataset", value=None if spec == location else spec, error=DatasetParameterError,
                    location=location, opener=store.open if store.remote else None)


LAYOUT_WHAT = {"dataset_type.txt": "dataset type", "classnames.txt": "class names",
               "zeroshot_classification_templates.txt": "templates"}


def _layout_text(store: Store, root: str, name: str, spec: str) -> list[str] | None:
    """The non-blank lines of CLIP_benchmark's text file ``name`` under ``root`` (None when it has none; an empty
    one is an error)."""
    path = store.join(root, name)
    if not store.isfile(path):
        return None
    return [line.text for line in layout_file(store, path, spec).lines(LAYOUT_WHAT[name], comments=False)]


def load_webdataset(spec: str, where: str, split: str | None = None,
                    classnames_file: str | None = None) -> ImageDataset:
    """Tar shards at ``where`` (a .tar, a folder of shards or of split folders of shards, CLIP_benchmark's ROOT, a
    brace/glob pattern; local or a URL) as a dataset; ``spec`` is the user's value, for errors."""
    store, path = Store.of(spec, where)
    found = _find(store, path, spec, split)
    kind, classnames, templates = None, None, None
    if found.layout_root is not None:
        root = found.layout_root
        kind = (_layout_text(store, root, "dataset_type.txt", spec) or ["classification"])[0].lower()
        if kind not in DATASET_TYPES:
            raise DatasetParameterError("dataset", spec, f"{store.location(root)}/dataset_type.txt says {kind!r}; "
                                        f"cliplab reads {' and '.join(DATASET_TYPES)} sets", quote=False)
        classnames = _layout_text(store, root, "classnames.txt", spec)
        templates = _layout_text(store, root, "zeroshot_classification_templates.txt", spec)
        bad = next((t for t in templates or [] if "{c}" not in t and "{}" not in t), None)
        if bad is not None:
            raise DatasetParameterError("dataset", spec, f"template {bad!r} in {store.location(root)}/"
                                        "zeroshot_classification_templates.txt has no {c} for the class name",
                                        quote=False)
    with ThreadPoolExecutor(max_workers=8) as pool:
        per_shard = list(pool.map(lambda s: index_shard(store, s, spec), found.shards))
    items = [(n, sample.image) for n, samples in enumerate(per_shard) for sample in samples]
    samples = [sample for samples in per_shard for sample in samples]
    if not samples:
        raise DatasetParameterError("dataset", spec, f"no images in the shards of {store.location(path)}",
                                    quote=False)

    def first(test) -> str:
        n, sample = next((n, s) for n, shard in enumerate(per_shard) for s in shard if test(s))
        return f"{store.location(found.shards[n])}: {sample.image.name}"

    labels = names = None
    if kind != "retrieval":
        with_cls = sum(s.cls is not None for s in samples)
        if kind == "classification" and with_cls < len(samples):
            raise DatasetParameterError("dataset", spec, f"{first(lambda s: s.cls is None)} has no .cls label, and "
                                        "this is a classification set (CLIP_benchmark layout): every image needs one",
                                        quote=False)
        if 0 < with_cls < len(samples):
            raise DatasetParameterError("dataset", spec, f"{first(lambda s: s.cls is None)} has no .cls label, but "
                                        f"{with_cls} other images have one: label every image or none", quote=False)
        if with_cls:
            labels, names = encode_labels([s.cls.strip() for s in samples], spec, ".cls labels", classnames_file,
                                          names=classnames)
    captions = None
    if any(s.txt is not None for s in samples):
        if kind == "retrieval":
            captions = [[c.strip() for c in (s.txt or "").splitlines() if c.strip()] for s in samples]
        else:
            captions = [[s.txt.strip()] if s.txt and s.txt.strip() else [] for s in samples]
    elif kind == "retrieval":
        raise DatasetParameterError("dataset", spec, f"{first(lambda s: True)} has no .txt captions, and this is a "
                                    "retrieval set (dataset_type.txt)", quote=False)
    locations = [store.location(s) for s in found.shards]
    return ImageDataset(
        name=found.name,
        split=found.split,
        source=TarSource(store, found.shards, items),
        fingerprint="wds:" + hash_json({"shards": locations, "images": [m.name for _, m in items]})[:24],
        classnames=names,
        labels=labels,
        captions=captions,
        templates=tuple(templates) if templates else None,
    )
