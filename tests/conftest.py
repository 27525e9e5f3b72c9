"""Shared fixtures: the real RSNA data folder (never copied into the repository) and small helpers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "rsna-bone-age"


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
    """Environment for CLI subprocesses: the data folder and few threads (the project is installed, editable, in the
    environment ./test.sh builds, so no path is needed)."""
    env = dict(os.environ)
    env["BONEAGE_DATA"] = str(data_dir)
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
def make_dicom():
    """``make_dicom(png_path, **tags) -> bytes``: a real radiograph wrapped into an uncompressed DX DICOM file
    (8-bit MONOCHROME2, body part HAND) with the given header tags (e.g. PatientSex="F",
    PatientBirthDate="20100115", StudyDate="20201120")."""
    from boneage.io.dicom_wrap import dx_bytes

    def make(png_path, **tags) -> bytes:
        return dx_bytes(png_path, **tags)

    return make


@pytest.fixture(scope="session")
def hand_dx(make_dicom):
    """``hand_dx(png, sex="M", ...) -> bytes``: :func:`make_dicom` with what a PACS has in every image (patient,
    study and series ids, dates); ``sex=None`` leaves PatientSex out, ``body_part``/``modality`` replace HAND/DX."""
    from pydicom.uid import generate_uid

    def make(png: Path, sex: str | None = "M", birth_date: str = "20120115", study_date: str = "20260110",
             body_part: str = "HAND", modality: str = "DX", patient_id: str = "BA-TEST-1") -> bytes:
        tags = dict(SeriesInstanceUID=generate_uid(), PatientName="Test^Child", PatientID=patient_id,
                    PatientBirthDate=birth_date, StudyDate=study_date, StudyTime="101500", StudyID="1",
                    AccessionNumber="ACC1", ReferringPhysicianName="", SeriesNumber=1, InstanceNumber=1,
                    Modality=modality, BodyPartExamined=body_part, Laterality="L")
        if sex is not None:
            tags["PatientSex"] = sex
        return make_dicom(png, **tags)

    return make


@pytest.fixture(scope="session")
def poppler():
    """(pdf_text, pdf_pages): a PDF's text by ``pdftotext -layout`` and its pages rendered to PNG by ``pdftoppm``
    (a list of paths), from Debian's poppler-utils (./test.sh installs it). Skips, saying so, where missing."""
    import shutil
    import tempfile

    missing = [t for t in ("pdftotext", "pdftoppm") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian package poppler-utils; ./test.sh installs it as root "
                    "with apt-get): the PDF cannot be rendered to check it")

    def text(pdf: bytes) -> str:
        return subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True,
                              timeout=60).stdout.decode()

    def pages(pdf: bytes) -> list[Path]:
        out = Path(tempfile.mkdtemp(prefix="pdfpages"))
        (out / "in.pdf").write_bytes(pdf)
        subprocess.run(["pdftoppm", "-r", "40", "-png", str(out / "in.pdf"), str(out / "page")], check=True,
                       timeout=60)
        return sorted(out.glob("page*.png"))

    return text, pages
