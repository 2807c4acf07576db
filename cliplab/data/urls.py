"""Images named by an http(s) URL (``inspect``, ``search --image``, ``similar --query``): fetched once into the cache
(``<cache>/urls/``, keyed by the URL), with a size limit and a timeout; offline (``CLIPLAB_OFFLINE=1`` or no network),
one clear error. Loopback addresses (127.0.0.1, localhost) are always reachable: they are not the network."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from cliplab.errors import ParameterError
from cliplab.io import atomic_path

MAX_BYTES = 50 * 1024 * 1024  # an image larger than this is refused (a page or a video, not a picture)
TIMEOUT = 20.0  # seconds without data before giving up
LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def is_url(value) -> bool:
    """Whether ``value`` is an http(s) URL."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("CLIPLAB_OFFLINE", "HF_HUB_OFFLINE"))


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def shown_name(url_path: str, tag: str = "") -> str:
    """The file name of a URL's path, made safe as a file name (``cat%20photo.JPG`` -> ``cat_photo.JPG``), ending in
    its image suffix (``.img`` when it has none); ``image.img`` when the path names no file. ``tag`` (a few characters
    of the URL's hash) ends the stem, so two addresses with the same file name (``.../image.jpg``, ``render?id=1``
    and ``render?id=2``) are told apart in tables and figures: ``cat-1a2b3c4d.jpg``."""
    import re

    suffix = Path(url_path).suffix.lower()
    suffix = suffix if suffix in IMAGE_SUFFIXES else ".img"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", urllib.parse.unquote(url_path.rsplit("/", 1)[-1])).strip("._")[:100]
    if not name:
        name = "image"
    stem = name[:-len(suffix)] if name.lower().endswith(suffix) else name
    kept = name[len(stem):] or suffix
    return f"{stem}-{tag}{kept}" if tag else stem + kept


def local_copy(url: str, cache_dir: str | os.PathLike, param: str, *, max_bytes: int = MAX_BYTES,
               timeout: float = TIMEOUT) -> Path:
    """The image at ``url`` as a local file (downloaded on first use, then read from the cache); errors name
    ``param``."""
    parsed = urllib.parse.urlparse(url)
    # <hash of the URL>/<the URL's own file name>: tables and figures then name the image as its address does
    digest = hashlib.sha256(url.encode()).hexdigest()
    path = Path(cache_dir) / "urls" / digest[:32] / shown_name(parsed.path, digest[:8])
    if path.is_file():
        return path
    if offline() and parsed.hostname not in LOOPBACK:
        raise ParameterError(param, url, "cannot download it: cliplab is offline (CLIPLAB_OFFLINE / HF_HUB_OFFLINE); "
                             "download the image and give its file instead", quote=False)
    request = urllib.request.Request(url, headers={"User-Agent": "cliplab"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ParameterError(param, url, f"is {int(declared):,} bytes, over the {max_bytes:,}-byte limit for an "
                                     "image", quote=False)
            data = response.read(max_bytes + 1)
    except ParameterError:
        raise
    except urllib.error.HTTPError as exc:
        raise ParameterError(param, url, f"cannot download it (HTTP {exc.code} {exc.reason}); check the address, or "
                             "give a local file", quote=False) from None
    except Exception as exc:  # noqa: BLE001 - every other way a download fails: one message naming the URL
        reason = getattr(exc, "reason", None) or exc
        raise ParameterError(param, url, f"cannot download it ({type(exc).__name__}: {reason}); check the address "
                             "and the network, or give a local file", quote=False) from None
    if len(data) > max_bytes:
        raise ParameterError(param, url, f"is over the {max_bytes:,}-byte limit for an image", quote=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


__all__ = ["is_url", "local_copy", "MAX_BYTES", "TIMEOUT"]
