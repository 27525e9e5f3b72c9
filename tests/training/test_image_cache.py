"""The on-disk image cache (boneage.training.image_cache): built by worker processes, reread without decoding, never
taken for complete after an interrupted build; and the training dataset that reads batches from it."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import boneage.training.image_cache as IC
from boneage.training.batches import CaseBatches
from boneage.geometry.framing import Geometry
from boneage.geometry.preprocess import to_uint8

pytestmark = pytest.mark.integration

GEO = Geometry(160, "letterbox")  # another base size than the files' 100 px, aspect kept


@pytest.fixture(scope="module")
def cases(data_dir) -> pd.DataFrame:
    table = pd.read_csv(data_dir / "train.csv", dtype={"id": str}).head(40).reset_index(drop=True)
    return table


def _files(d) -> list[str]:
    return sorted(os.listdir(d))


def test_worker_build_equals_decoding_and_second_run_does_not_decode(cases, data_dir, tmp_path, monkeypatch):
    folder = data_dir / "train"
    first = IC.load_images(cases, folder, GEO, cache_dir=tmp_path, workers=2, progress=False)
    assert isinstance(first.images, np.memmap) and first.images.shape == (40, 160, 160)
    assert first.images.dtype == np.uint8 and first.failed == []
    # the worker processes wrote exactly what one decode in this process gives
    for i in (0, 17, 39):
        expected = to_uint8(IC.load_case_image(folder, cases["id"][i], GEO))
        assert np.array_equal(first.images[i], expected)
    assert [f for f in _files(tmp_path) if "partial" in f] == []

    def no_decoding(*_a, **_k):
        raise AssertionError("the cache was complete: nothing should be decoded")

    monkeypatch.setattr(IC, "load_case_image", no_decoding)
    monkeypatch.setattr(IC, "read_radiograph", no_decoding)
    second = IC.load_images(cases, folder, GEO, cache_dir=tmp_path, workers=2, progress=False)
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    assert second.cases["id"].tolist() == cases["id"].tolist()
    # another geometry or another id list is another cache, so it does decode
    with pytest.raises(AssertionError, match="nothing should be decoded"):
        IC.load_images(cases.head(39), folder, GEO, cache_dir=tmp_path, workers=1, progress=False)


def test_failed_rows_are_reported_and_left_out(cases, data_dir, tmp_path):
    bad = cases.copy()
    bad.loc[5, "id"] = "no_such_case"
    got = IC.load_images(bad, data_dir / "train", GEO, cache_dir=tmp_path, workers=2, progress=False)
    assert [f[0] for f in got.failed] == ["no_such_case"] and "not found" in got.failed[0][1]
    assert len(got.cases) == 39 and "no_such_case" not in set(got.cases["id"])
    assert got.images.shape[0] == 39
    assert np.array_equal(got.images[5], to_uint8(IC.load_case_image(data_dir / "train", bad["id"][6], GEO)))
    again = IC.open_image_cache(bad, data_dir / "train", GEO, tmp_path)
    assert again is not None and again.failed == got.failed


def test_build_that_raises_midway_leaves_nothing_taken_for_complete(cases, data_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = IC.load_case_image

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("disk vanished")
        return real(*a, **k)

    monkeypatch.setattr(IC, "load_case_image", flaky)
    with pytest.raises(RuntimeError, match="disk vanished"):
        IC.load_images(cases, data_dir / "train", GEO, cache_dir=tmp_path, workers=1, progress=False)
    assert IC.open_image_cache(cases, data_dir / "train", GEO, tmp_path) is None
    assert _files(tmp_path) == []  # the partial array is removed, no sidecar was written
    monkeypatch.setattr(IC, "load_case_image", real)
    ok = IC.load_images(cases, data_dir / "train", GEO, cache_dir=tmp_path, workers=1, progress=False)
    assert ok.images.shape == (40, 160, 160) and calls["n"] == 12


_KILLED_BUILD = """
import sys, time
import pandas as pd
import boneage.training.image_cache as IC
from boneage.geometry.framing import Geometry
real = IC.load_case_image
def slow(*a, **k):
    time.sleep(0.1)
    return real(*a, **k)
IC.load_case_image = slow
cases = pd.read_csv(sys.argv[1] + "/train.csv", dtype={"id": str}).head(40)
IC.load_images(cases, sys.argv[1] + "/train", Geometry(160, "letterbox"), cache_dir=sys.argv[2], workers=1,
               progress=False)
"""


def test_killed_build_is_rebuilt_not_trusted(cases, data_dir, tmp_path, subprocess_env):
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, str(data_dir), str(tmp_path)], env=subprocess_env)
    try:
        deadline = time.time() + 30
        while not any(f.endswith(".partial") for f in _files(tmp_path)):
            assert proc.poll() is None and time.time() < deadline, "the build never started"
            time.sleep(0.05)
        time.sleep(0.5)  # some rows written, most not
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = _files(tmp_path)
    assert any(f.endswith(".partial") for f in left) and not any(f.endswith(".json") for f in left)
    assert IC.open_image_cache(cases, data_dir / "train", GEO, tmp_path) is None
    # a crash between renaming the array and writing the sidecar: an array alone is not a cache either
    key = IC.cache_key(data_dir / "train", cases["id"].tolist(), GEO)
    arr_path, meta_path = IC.cache_paths(tmp_path, key)
    np.save(arr_path, np.zeros((40, 160, 160), np.uint8))
    assert IC.open_image_cache(cases, data_dir / "train", GEO, tmp_path) is None
    rebuilt = IC.load_images(cases, data_dir / "train", GEO, cache_dir=tmp_path, workers=2, progress=False)
    assert rebuilt.images[:, 60:100, 60:100].max() > 0 and meta_path.is_file()


def test_training_batches_read_rows_from_the_memmap_without_copying_it(cases, data_dir, tmp_path):
    got = IC.load_images(cases, data_dir / "train", GEO, cache_dir=tmp_path, workers=1, progress=False)
    ds = CaseBatches(got.images, got.cases["boneage"].to_numpy(), got.cases["male"].to_numpy())
    blob = pickle.dumps(ds)  # what a DataLoader worker would receive: the file name, not the pixels
    assert len(blob) < 20_000 < got.images.nbytes
    clone = pickle.loads(blob)
    x, age, male = clone[np.array([3, 0, 7])]
    assert x.shape == (3, 160, 160) and x.dtype.is_floating_point is False
    assert np.array_equal(x.numpy(), np.asarray(got.images)[[3, 0, 7]])
    assert age.tolist() == got.cases["boneage"].to_numpy(np.float32)[[3, 0, 7]].tolist()
    assert male.tolist() == got.cases["male"].astype(int).to_numpy()[[3, 0, 7]].tolist()


def test_workers_prepare_with_every_field_of_the_geometry(data_dir, tmp_path):
    """Trimming and laterality change the pixels: a worker that rebuilt the geometry from some of its fields
    filled a cache whose key promised them with images made without them."""
    from PIL import Image

    from boneage.io.imaging import read_radiograph

    folder = tmp_path / "films"
    folder.mkdir()
    raw = read_radiograph(data_dir / "train" / "1380.png")
    u8 = np.round((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)
    Image.fromarray(np.ascontiguousarray(u8[:, ::-1])).save(folder / "mirrored.png")  # a left hand, mirrored
    Image.fromarray(np.pad(u8, ((0, 0), (30, 30)), constant_values=255)).save(folder / "bars.png")  # white bars
    table = pd.DataFrame({"id": ["mirrored", "bars"], "male": [True, True], "boneage": [100.0, 100.0]})
    geo = Geometry(trim_bars=True, laterality="left")
    built = IC.build_image_cache(table, folder, geo, tmp_path / "cache", workers=2, progress=False)
    plain = IC.build_image_cache(table, folder, Geometry(), tmp_path / "cache", workers=2, progress=False)
    for i, cid in enumerate(table["id"]):
        assert np.array_equal(built.images[i], to_uint8(IC.load_case_image(folder, cid, geo))), cid
        assert not np.array_equal(built.images[i], plain.images[i]), cid
