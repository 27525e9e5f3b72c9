"""Shared fixtures: the real RSNA data folder (never copied into the repository) and small helpers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "rsna-bone-age"

if str(REPO_ROOT) not in sys.path:  # `pytest` run from elsewhere still imports boneage/ and pipelines/
    sys.path.insert(0, str(REPO_ROOT))


def _resolve_data_dir() -> Path:
    return Path(os.environ.get("BONEAGE_DATA") or DEFAULT_DATA_DIR).expanduser().resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The RSNA bone-age folder from $BONEAGE_DATA (default <repo>/../shared/data/rsna-bone-age)."""
    path = _resolve_data_dir()
    missing = [p for p in ("train.csv", "test.csv", "train", "test") if not (path / p).exists()]
    if missing:
        pytest.fail(
            f"RSNA bone-age data not found at {path} (missing {', '.join(missing)}). Set BONEAGE_DATA to the "
            "folder holding train.csv, train/, test.csv and test/ (default <repo>/../shared/data/rsna-bone-age).",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def train_image_path(data_dir: Path) -> Path:
    """A real 100x100 training radiograph (case 1378: black film background)."""
    return data_dir / "train" / "1378.png"


@pytest.fixture(scope="session")
def subprocess_env(data_dir: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: the data folder, the repo on the path, few threads."""
    env = dict(os.environ)
    env["BONEAGE_DATA"] = str(data_dir)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


@pytest.fixture
def predict_cli(subprocess_env):
    """Run ``python -m pipelines.predict ARGS`` from the repository (the outlier check off: it needs the shipped
    model's training features, which these CLI tests do not exercise); returns the completed process."""

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipelines.predict", "--no-outlier-check", *args], cwd=REPO_ROOT,
                              env=subprocess_env, capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture(scope="session")
def hand_dx():
    """``make(png, sex="M", ...)``: a real radiograph (PNG, native size) wrapped as an uncompressed DX DICOM
    file (bytes) with patient, study and series attributes; ``sex=None`` leaves PatientSex out, ``body_part``
    and ``modality`` set those header fields."""
    import io

    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def make(png: Path, sex: str | None = "M", birth_date: str = "20120115", study_date: str = "20260110",
             body_part: str = "HAND", modality: str = "DX", patient_id: str = "BA-TEST-1") -> bytes:
        pixels = np.asarray(Image.open(png).convert("L"))
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Test^Child", patient_id, birth_date
        if sex is not None:
            ds.PatientSex = sex
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = study_date, "101500", "1", "ACC1"
        ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 1, 1
        ds.Modality, ds.BodyPartExamined, ds.Laterality = modality, body_part, "L"
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    return make
