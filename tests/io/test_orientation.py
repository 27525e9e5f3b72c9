"""EXIF orientation (#31.1): a JPEG whose EXIF tag says "rotate to display" is read as it is displayed,
and the notes say it was turned."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from boneage.io.imaging import decode_image_bytes
from boneage.io.input_gate import load_radiograph_bytes

pytestmark = pytest.mark.integration

# EXIF Orientation -> the transpose that stores the upright image so that a viewer applying the tag shows it
# upright again: 6 means "rotate 90 clockwise to display", so the stored pixels are the upright turned 90 ccw.
STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


def _jpeg(im: Image.Image, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    if orientation is None:
        im.save(buf, "JPEG", quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.transpose(STORED[orientation]).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def official(data_dir) -> Image.Image:
    """A real official test film (native resolution, 8-bit gray), cropped to multiples of 16 px."""
    with Image.open(data_dir / "test" / "4361.png") as im:
        im = im.convert("L")
        return im.crop((0, 0, im.width // 16 * 16, im.height // 16 * 16))


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied_and_noted(official, orientation):
    upright = decode_image_bytes(_jpeg(official), "up.jpg")
    turned = decode_image_bytes(_jpeg(official, orientation), "turned.jpg")
    assert turned.pixels.shape == upright.pixels.shape
    # JPEG blocks quantise differently when turned: equal up to compression noise, far from the sideways film
    assert np.abs(turned.pixels - upright.pixels).mean() < 1.5
    assert any("EXIF" in n and "turned" in n for n in turned.notes), turned.notes
    assert not any("EXIF" in n for n in upright.notes)
    gated = load_radiograph_bytes(_jpeg(official, orientation), "turned.jpg", upload=True)
    assert any("EXIF" in n for n in gated.notes)


def test_exif_turned_film_reads_as_the_upright_film(official):
    """The bone age of the EXIF-turned JPEG equals the upright JPEG's (before: moved by tens of months)."""
    from boneage.inference.assess import assess
    from boneage.inference.predictor import load_predictor

    p = load_predictor()
    up = assess(_jpeg(official), "M", name="up.jpg", predictor=p)
    for orientation in (6, 8):
        a = assess(_jpeg(official, orientation), "M", name="turned.jpg", predictor=p)
        assert abs(a.boneage_months - up.boneage_months) < 1.0, (orientation, a.boneage_months, up.boneage_months)
        assert any("EXIF" in n for n in a.notes)
