"""Write cliplab/data/wordnet_names.tsv.gz: WordNet id -> class name for folders named like ImageNet's (n01440764).

Sources (both installed with cliplab: open_clip_torch depends on timm): the 1,000 ImageNet-1k classes take the names
OpenAI's CLIP used for ImageNet zero-shot (open_clip's ``IMAGENET_CLASSNAMES``, in the order of the sorted ids, which
is timm's ``imagenet_synsets.txt``); the other ImageNet-21k ids take WordNet's first lemma (timm's
``imagenet_synset_to_lemma.txt``). Each line: id, name, then up to three WordNet lemmas (used to tell apart two
classes that would get the same name). Run: ``python tools/make_wordnet_names.py`` (rewrites the file)."""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import timm
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

OUT = Path(__file__).resolve().parents[1] / "cliplab" / "data" / "wordnet_names.tsv.gz"


def main(out: Path = OUT) -> None:
    info = Path(timm.__file__).parent / "data" / "_info"
    ids_1k = (info / "imagenet_synsets.txt").read_text().split()
    assert len(ids_1k) == len(IMAGENET_CLASSNAMES) == 1000 and ids_1k == sorted(ids_1k)
    clip = dict(zip(ids_1k, IMAGENET_CLASSNAMES))
    lines = []
    for line in (info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines():
        wnid, lemmas = line.split("\t", 1)
        words = [w.strip() for w in lemmas.split(",") if w.strip()][:3]
        name = clip.get(wnid, words[0])
        lines.append("\t".join([wnid, name, *words]))
    missing = set(clip) - {ln.split("\t", 1)[0] for ln in lines}
    assert not missing, missing
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:  # mtime 0: the same bytes on every run
        gz.write(("\n".join(sorted(lines)) + "\n").encode("utf-8"))
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    print(f"wrote {out} ({len(lines)} ids, {out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
