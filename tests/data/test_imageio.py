"""The decode guard: what one image may cost in memory, known from its header (docs/reliability.md)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bombs import png_header_only
from cliplab.data.imageio import (DECODE_BUDGET, PEAK_BYTES, PEAK_TRANSPARENT, RESIZE_BUDGET, BadImage, check_decode,
                                  check_resize, open_rgb, resized_size)

SIDE = 3000  # 9 MP: large enough for RSS to measure bytes per pixel, small enough for any CI machine

# (mode of the file, how to write a SIDE x SIDE file of it, the PEAK_BYTES entry that must cover it)
MODES = [
    ("RGB", lambda p: Image.new("RGB", (SIDE, SIDE)).save(p), PEAK_BYTES["RGB"]),
    ("L", lambda p: Image.new("L", (SIDE, SIDE)).save(p), PEAK_BYTES["L"]),
    ("P", lambda p: Image.new("P", (SIDE, SIDE)).save(p), PEAK_BYTES["P"]),
    ("1", lambda p: Image.new("1", (SIDE, SIDE)).save(p), PEAK_BYTES["1"]),
    ("RGBA", lambda p: Image.new("RGBA", (SIDE, SIDE)).save(p), PEAK_BYTES["RGBA"]),
    ("LA", lambda p: Image.new("LA", (SIDE, SIDE)).save(p), PEAK_BYTES["LA"]),
    ("P+transparency", lambda p: Image.new("P", (SIDE, SIDE), 1).save(p, transparency=0), PEAK_TRANSPARENT),
    ("I;16", lambda p: Image.fromarray(np.full((SIDE, SIDE), 3000, np.uint16)).save(p), PEAK_BYTES["I;16"]),
    ("CMYK", lambda p: Image.new("CMYK", (SIDE, SIDE)).save(p.with_suffix(".jpg")), PEAK_BYTES["CMYK"]),
    ("F", lambda p: Image.fromarray(np.full((SIDE, SIDE), 0.5, np.float32)).save(p.with_suffix(".tif")),
     PEAK_BYTES["F"]),
]

PEAK = """
import resource, sys
from cliplab.data.imageio import open_rgb
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
open_rgb(sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.parametrize("mode, write, per_pixel", MODES, ids=[m[0] for m in MODES])
def test_decoding_and_converting_stays_within_the_documented_bytes_per_pixel(tmp_path, mode, write, per_pixel):
    """PEAK_BYTES is what the guard charges an image; the peak RSS of opening one (in a fresh process) must not
    exceed it, or the 2 GB budget would not bound what decoding allocates."""
    path = tmp_path / "img.png"
    write(path)
    path = next(tmp_path.glob("img.*"))
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = int(out.stdout.split()[-1]) / SIDE**2
    assert measured <= per_pixel, f"{mode}: {measured:.2f} bytes per pixel, the guard charges {per_pixel}"


# (what, width, height, mode, transparency, refused with)
DECODES = [
    ("a photo", 4000, 3000, "RGB", False, None),
    ("the pixel limit", 20_000, 20_000, "RGB", False, None),
    ("over the pixel limit", 20_001, 20_000, "RGB", False, "image too large (20001x20000"),
    ("RGBA within the budget", 9_000, 9_000, "RGBA", False, None),
    ("RGBA over the budget", 11_000, 11_000, "RGBA", False, "too large to decode (11000x11000 RGBA"),
    ("16-bit over the budget", 12_000, 12_000, "I;16", False, "too large to decode"),
    ("palette with transparency", 10_000, 10_000, "P", True, "too large to decode"),
    ("palette without", 10_000, 10_000, "P", False, None),
    ("an unknown mode counts as the widest", 9_000, 9_000, "XYZ", False, "too large to decode"),
]


@pytest.mark.parametrize("what, w, h, mode, transparency, refused", DECODES, ids=[d[0] for d in DECODES])
def test_check_decode(what, w, h, mode, transparency, refused):
    if refused is None:
        check_decode(w, h, mode, transparency)
        assert w * h * PEAK_BYTES.get(mode, 29) <= DECODE_BUDGET
    else:
        with pytest.raises(BadImage, match=refused.replace("(", r"\(")):
            check_decode(w, h, mode, transparency)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200_000), st.integers(1, 200_000), st.sampled_from([64, 224, 336, (224, 224), (256, 320)]),
       st.sampled_from(["shortest", "longest", "squash"]))
def test_resized_size_is_what_the_models_resize_makes(w, h, size, mode):
    """Property: the short side becomes the input size (shortest), the long side fits it (longest), or the image
    becomes the input size (squash); the aspect ratio is kept to a pixel; check_resize refuses exactly what the
    budget does not hold."""
    cfg = {"size": size, "resize_mode": mode}
    out_h, out_w = (size, size) if isinstance(size, int) else size
    rw, rh = resized_size(w, h, cfg)
    if mode == "squash":
        assert (rw, rh) == (out_w, out_h)
    elif mode == "shortest":
        assert min(rw, rh) == min(out_w, out_h) and abs(rw / rh - w / h) <= max(w / h, h / w) / min(rw, rh) + 1e-9
    else:
        assert max(rw, rh) <= max(out_w, out_h) and max(rw, rh) >= max(out_w, out_h) - 1
    if rw * rh > RESIZE_BUDGET:
        with pytest.raises(BadImage, match="extreme aspect ratio"):
            check_resize(w, h, cfg)
    else:
        check_resize(w, h, cfg)


def test_a_header_that_declares_a_huge_image_is_refused_before_decoding(tmp_path):
    """The 16-bit file declares 12000x12000 (288 MB of pixels, ~3.6 GB to rescale to 8 bits) in 100 bytes: refused
    with the reason, and nothing is allocated (the header is all that is read)."""
    import tracemalloc

    path = png_header_only(tmp_path / "sixteen.png", 12_000, 12_000, 16, 0)
    tracemalloc.start()
    with pytest.raises(BadImage, match=r"too large to decode \(12000x12000 I;16: about 3\.6 GB"):
        open_rgb(str(path))
    assert tracemalloc.get_traced_memory()[1] < 5_000_000
    tracemalloc.stop()
