"""Library helpers behind the dashboard pages: bootstrap CIs, the maturity rule, upload checks."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from boneage.growth.maturity import ADVANCED, DELAYED, NORMAL, maturity_status
from boneage.io.imaging import ImageLoadError, colorfulness, looks_like_radiograph, read_upload
from boneage.evaluation.metrics import bootstrap_ci, mae_ci_table

pytestmark = pytest.mark.unit


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).save(b, fmt)
    return b.getvalue()


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    x = np.random.default_rng(1).normal(10, 2, 400)
    est, lo, hi = bootstrap_ci(x, np.mean, n_boot=500, seed=3)
    assert est == pytest.approx(x.mean())
    assert lo < est < hi and hi - lo == pytest.approx(2 * 1.96 * 2 / 20, rel=0.25)
    assert bootstrap_ci(x, np.mean, n_boot=500, seed=3) == (est, lo, hi)
    assert bootstrap_ci([5.0], np.mean) == (5.0, 5.0, 5.0)
    assert all(np.isnan(v) for v in bootstrap_ci([np.nan], np.mean))
    # chunking gives the same answer as one batch
    assert bootstrap_ci(x, np.median, n_boot=300, seed=0, max_elems=1000) == bootstrap_ci(x, np.median, n_boot=300, seed=0)


def test_mae_ci_table_groups_in_age_order_and_skips_unlabelled():
    df = pd.DataFrame({"boneage": [10, 30, 100, 200, np.nan], "boneage_pred": [12, 26, 100, 190, 50],
                       "sex": ["F", "M", "F", "M", "F"], "age_band": ["0-2y", "2-5y", "8-11y", "17y+", None]})
    overall = mae_ci_table(df)
    assert overall["n"].tolist() == [4] and overall["mae"].iloc[0] == pytest.approx(4.0)
    by = mae_ci_table(df, ["age_band"], n_boot=50)
    assert by["age_band"].tolist() == ["0-2y", "2-5y", "8-11y", "17y+"]
    assert by["mae"].tolist() == pytest.approx([2, 4, 0, 10])


def test_maturity_status_rule():
    assert maturity_status(100, 150, interval=(80, 120)).status == DELAYED
    assert maturity_status(100, 60, interval=(80, 120)).status == ADVANCED
    assert maturity_status(100, 110, interval=(80, 120)).status == NORMAL
    # a difference under the minimum gap is never abnormal, however narrow the interval
    assert maturity_status(100, 108, interval=(99, 101)).status == NORMAL
    a = maturity_status(100, 150, scale=5)  # no interval: Laplace 95% of the scale (~ +/- 15 months)
    assert a.status == DELAYED and a.difference_months == -50
    with pytest.raises(ValueError):
        maturity_status(100, 100)


def test_colour_photos_are_refused_gray_rgb_is_not():
    gray = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    rgb_gray = np.repeat(gray[..., None], 3, axis=2)
    assert colorfulness(rgb_gray) == 0.0
    assert looks_like_radiograph(_png(rgb_gray, "JPEG"), "x.jpg")[0]
    assert read_upload(_png(rgb_gray), "x.png").shape == (64, 64)
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 220, np.linspace(0, 255, 64, dtype=np.uint8)[None, :], 30
    ok, reason = looks_like_radiograph(_png(photo), "hand.png")
    assert not ok and "colour" in reason
    with pytest.raises(ImageLoadError, match="colour"):
        read_upload(_png(photo), "hand.png")


@pytest.mark.parametrize("data,match", [(b"", "empty"), (b"not an image at all", "not a PNG, JPEG or DICOM")])
def test_read_upload_refuses_empty_and_garbage(data, match):
    with pytest.raises(ImageLoadError, match=match):
        read_upload(data, "up.png")


def test_read_upload_refuses_huge_images_from_the_header():
    big = io.BytesIO()
    Image.new("L", (8000, 6250)).save(big, "PNG")
    with pytest.raises(ImageLoadError, match="50 megapixels"):
        read_upload(big.getvalue(), "huge.png")
