"""The input gate (boneage.io.input_gate): what cannot be a hand radiograph is refused at every door, with a
reason; real radiographs pass. (All 12,611 training and 200 official test images: pipelines.benchmarks.gate.)"""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from boneage.io.imaging import ImageLoadError, decode_image_bytes, read_radiograph
from boneage.io.input_gate import NotARadiographError, check_radiograph, load_radiograph_bytes
from boneage.inference.assess import assess_cases
from pipelines.benchmarks.gate import hostile_inputs

pytestmark = pytest.mark.integration

EXPECTED_FLAG = {"black.png": "blank", "white.png": "blank", "one_pixel.png": "too_small", "rgb_noise.png": "colour",
                 "gray_noise.png": "noise", "sliver_5x5000.png": "too_small", "ct.dcm": "modality",
                 "mr.dcm": "modality", "rtdose.dcm": "modality"}


@pytest.fixture(scope="module")
def hostile() -> dict[str, bytes]:
    return hostile_inputs()


@pytest.fixture(scope="module")
def predictor():
    from boneage import load_predictor

    return load_predictor()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _dx_dicom(pixels: np.ndarray, **elements) -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid(), "DX"
    pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    for k, v in elements.items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("name", list(EXPECTED_FLAG))
def test_hostile_input_is_refused_with_its_reason(hostile, name):
    dec = decode_image_bytes(hostile[name], name)
    res = check_radiograph(dec.pixels, name, dec.dicom, dec.colorfulness)
    assert not res.ok
    assert EXPECTED_FLAG[name] in res.flags
    assert res.reason.startswith(name) and len(res.reason) > 60  # names the file and says why
    with pytest.raises(NotARadiographError, match=name.split(".")[0]):
        load_radiograph_bytes(hostile[name], name)


def test_real_radiographs_pass(data_dir):
    train = sorted((data_dir / "train").glob("*.png"))[::400]  # 32 spread over the set
    test = [data_dir / "test" / f"{i}.png" for i in (4360, 4361, 4444, 4527)]  # 4444, 4527: lowest structure
    for path in [*train, *test, data_dir / "train" / "2641.png", data_dir / "train" / "2590.png"]:
        res = check_radiograph(read_radiograph(path), path.name)
        assert res.ok, (path.name, res.reason, res.measures)


def test_dicom_modality_and_body_part(gray_pixels):
    dx = _dx_dicom(gray_pixels, BodyPartExamined="HAND")
    assert load_radiograph_bytes(dx, "hand.dcm").gate.ok
    assert load_radiograph_bytes(_dx_dicom(gray_pixels), "nobody.dcm").gate.ok  # no body part: not judged
    with pytest.raises(NotARadiographError, match="CHEST"):
        load_radiograph_bytes(_dx_dicom(gray_pixels, BodyPartExamined="CHEST"), "chest.dcm")
    with pytest.raises(NotARadiographError, match="ultrasound"):
        load_radiograph_bytes(_dx_dicom(gray_pixels, Modality="US"), "us.dcm")


@pytest.fixture(scope="module")
def gray_pixels(train_image_path) -> np.ndarray:
    return np.asarray(Image.open(train_image_path)).astype(np.uint16) * 16


def test_library_doors_refuse(predictor, hostile, tmp_path, train_image_path):
    black = np.zeros((300, 300), np.float32)
    with pytest.raises(NotARadiographError, match="blank"):
        predictor.predict_array(black, male=True)
    with pytest.raises(NotARadiographError, match="noise"):
        predictor.predict_bytes(hostile["gray_noise.png"], male=False, name="gray_noise.png")
    (tmp_path / "ct.dcm").write_bytes(hostile["ct.dcm"])
    with pytest.raises(NotARadiographError, match="CT scan"):
        predictor.predict_file(tmp_path / "ct.dcm", male=False)
    # the batch door: one error row for the refused image, the real radiograph still predicted
    (tmp_path / "black.png").write_bytes(hostile["black.png"])
    (tmp_path / "real.png").write_bytes(train_image_path.read_bytes())
    out = assess_cases(pd.DataFrame({"id": ["black", "real", "ct"], "male": [True, False, True]}), tmp_path, predictor=predictor)
    assert out["id"].tolist() == ["black", "real", "ct"]
    assert "blank" in out.loc[0, "error"] and "CT scan" in out.loc[2, "error"]
    assert out.loc[1, "error"] == "" and np.isfinite(out.loc[1, "boneage_pred"])
    # a real radiograph through predict_array still works (colour array averaged to gray)
    gray = np.asarray(Image.open(train_image_path), np.float32)
    a = predictor.predict_array(gray, male=True).boneage_months
    b = predictor.predict_array(np.repeat(gray[..., None], 3, axis=2), male=True).boneage_months
    assert a == pytest.approx(b, abs=1e-4)


def test_cli_refuses_a_black_image(tmp_path, hostile, repo_root, subprocess_env):
    img = tmp_path / "black.png"
    img.write_bytes(hostile["black.png"])
    proc = subprocess.run([sys.executable, "-m", "pipelines.predict", str(img), "--sex", "F"], cwd=repo_root,
                          env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout
    assert "blank" in proc.stderr and "bone age" not in proc.stdout and "Traceback" not in proc.stderr


def test_unlike_training_data_is_marked_at_the_library_and_cli_doors(predictor, data_dir, tmp_path, repo_root,
                                                                     subprocess_env):
    """What passes the gate but lies outside the training features is marked, not refused (LOF check)."""
    from boneage.inference.unlike_training import fit_training_outlier_check

    p = predictor.with_options()
    p.outlier_check = fit_training_outlier_check()
    real = p.predict_file(data_dir / "test" / "4361.png", male=False)
    assert real.unlike_training_data is False and real.outlier_score < p.outlier_check.threshold
    yy, xx = np.mgrid[0:400, 0:300]
    checker = ((((xx // 40) + (yy // 40)) % 2) * 200 + 10).astype(np.float32)
    assert check_radiograph(checker).ok  # a picture with structure: not refused by the gate...
    odd = p.predict_array(checker, male=True)
    assert odd.unlike_training_data is True and odd.as_row()["unlike_training_data"] is True  # ...but marked
    assert predictor.outlier_check is None  # with_options gave a separate predictor object
    img = tmp_path / "checker.png"
    Image.fromarray(checker.astype(np.uint8)).save(img)
    proc = subprocess.run([sys.executable, "-m", "pipelines.predict", str(img), "--sex", "M"], cwd=repo_root,
                          env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "looks unlike the training radiographs" in proc.stderr


def test_smooth_synthetic_images_are_refused_and_real_films_pass(data_dir):
    """#31.8: a 29-megapixel synthetic gradient (and a radial one) is not a hand radiograph: nothing but a smooth
    surface. Flat fields and noise stay refused; real films pass (all 200 official test films and 500 training
    films: pipelines.benchmarks.gate / the numbers in docs/decisions.md)."""
    from boneage.io.input_gate import check_radiograph

    y, x = np.mgrid[0:5400, 0:5400].astype(np.float32)
    for name, img in (("gradient", x + y), ("radial", np.hypot(x - 2700, y - 2700))):
        r = check_radiograph(img, name)
        assert not r.ok and "smooth" in r.flags and "not a picture of a hand" in r.reason, (name, r)
    del x, y
    flat = np.full((512, 512), 80, np.float32)
    noise = np.random.default_rng(0).uniform(0, 255, (512, 512)).astype(np.float32)
    assert "blank" in check_radiograph(flat).flags and "noise" in check_radiograph(noise).flags
    from boneage.io.imaging import read_radiograph
    for cid in ("4360", "4361", "4362", "4365"):
        assert check_radiograph(read_radiograph(data_dir / "test" / f"{cid}.png")).ok
