"""Caption datasets in the two JSON formats retrieval papers use.

* COCO captions annotation files (``captions_val2017.json``: ``images`` + ``annotations`` with ``image_id`` and
  ``caption``). Images are looked for in ``image_root`` (default: a folder named after the file's split,
  e.g. ``../val2017`` next to ``annotations/``, or the JSON's own folder).
* Karpathy split files (``dataset_coco.json`` / ``dataset_flickr30k.json``: ``images`` with ``filename``,
  optional ``filepath``, ``split`` and ``sentences[].raw``); ``split`` picks test/val/train (``restval``
  counts as train).

Images listed in the JSON but missing on disk are left out and counted in ``missing`` (reported by the CLI):
a subset of COCO on disk is a normal situation, a wrong ``--image-root`` (nothing found) is an error.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Discriminator, StrictInt, StrictStr, Tag

from cliplab.data.base import ImageDataset
from cliplab.data.sources import FileSource
from cliplab.data.splits import SplitError
from cliplab.errors import DatasetParameterError
from cliplab.files import FileName, PathText, Shape, Str, UserFile
from cliplab.io import hash_file


ImageId = Union[StrictInt, StrictStr]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # the other fields of the formats (licenses, urls, sizes...)


class CocoImage(_Open):
    id: ImageId
    file_name: FileName


class CocoCaption(_Open):
    image_id: ImageId
    caption: Str


class CocoFile(_Open):
    images: list[CocoImage]
    annotations: list[CocoCaption]


class Sentence(_Open):
    raw: Str = ""


class KarpathyImage(_Open):
    filename: FileName
    filepath: PathText = ""
    split: str | None = None
    sentences: list[Sentence]


class KarpathyFile(_Open):
    images: list[KarpathyImage]


def caption_json_kind(data) -> str | None:
    """``coco`` (images + annotations), ``karpathy`` (images with sentences) or None."""
    if not isinstance(data, dict) or "images" not in data:
        return None
    if "annotations" in data:
        return "<coco>"
    images = data["images"]
    return "<karpathy>" if isinstance(images, list) and images and isinstance(images[0], dict) \
        and "sentences" in images[0] else None


CAPTION_JSON = Shape(Annotated[Union[Annotated[CocoFile, Tag("<coco>")], Annotated[KarpathyFile, Tag("<karpathy>")]],
                               Discriminator(caption_json_kind, custom_error_type="kind", custom_error_message=(
                                   "should be a COCO captions file (images + annotations) or a Karpathy split file "
                                   "(images with sentences)"))], "a COCO captions or Karpathy split file")


def _guess_root(path: Path) -> list[Path]:
    m = re.search(r"(train|val|test)(\d{4})", path.stem)
    cands = []
    if m:
        cands += [path.parent.parent / m.group(0), path.parent / m.group(0)]
    cands += [path.parent, path.parent.parent / "images", path.parent / "images"]
    return cands


def load_caption_json(path: str | Path, split: str | None = None, image_root: str | Path | None = None,
                      spec: str | None = None) -> ImageDataset:
    """A COCO captions or Karpathy split file as a caption dataset (``spec``: the user's value, for errors)."""
    path = Path(path)
    file = UserFile(path, "dataset", value=spec if spec not in (None, str(path)) else None,
                    error=DatasetParameterError)
    data = file.json(CAPTION_JSON)
    kind = "coco" if isinstance(data, CocoFile) else "karpathy"
    if kind == "coco":
        items = _coco_items(data)
        found = re.search(r"(train|val|test)\d{4}", path.stem)
        file_split = found.group(0) if found else "all"  # captions_val2017.json -> val2017 (also accepted: val)
        if split not in (None, "all", file_split, found and found.group(1)):
            raise SplitError(f"COCO captions file {path.name} (one split: {file_split})", split, [file_split])
        split_name = file_split
    else:
        want = split or "test"
        items = [(img.filepath, img.filename, [s.raw.strip() for s in img.sentences])
                 for img in data.images
                 if want == "all" or img.split == want or (want == "train" and img.split == "restval")]
        if not items:
            splits = sorted({img.split or "?" for img in data.images})
            raise file.fail(f"no images in split {want!r}; splits in the file: {', '.join(splits)}")
        split_name = want
    roots = [Path(image_root)] if image_root else _guess_root(path)
    root = next((r for r in roots if r.is_dir() and any((r / sub / fn).is_file() for sub, fn, _ in items[:50])), None)
    if root is None:
        root = next((r for r in roots if r.is_dir() and any((r / sub / fn).is_file() for sub, fn, _ in items)), None)
    if root is None:
        raise DatasetParameterError("image_root", image_root, f"{path}: none of its images were found under "
                                    f"{', '.join(map(str, roots))}; pass the image folder with {{p:image_root}}",
                                    prefix=False)
    paths, captions, missing = [], [], 0
    for sub, fn, caps in items:
        p = root / sub / fn
        if p.is_file():
            paths.append(str(p))
            captions.append([c for c in caps if c])
        else:
            missing += 1
    ds = ImageDataset(name=path.stem, split=split_name, source=FileSource(paths),
                      fingerprint=f"{kind}:{hash_file(path)[:16]}:{split_name}:{len(paths)}", captions=captions)
    ds.missing = missing  # type: ignore[attr-defined]
    return ds


def _coco_items(data: CocoFile) -> list[tuple[str, str, list[str]]]:
    caps: dict[int | str, list[str]] = {}
    for a in data.annotations:
        caps.setdefault(a.image_id, []).append(a.caption.strip())
    return [("", img.file_name, caps.get(img.id, [])) for img in data.images]
