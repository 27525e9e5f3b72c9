"""The DICOM node end to end against a real Orthanc PACS (Debian package ``orthanc``; ./test.sh installs it).

Orthanc is started on free loopback ports with a temporary configuration that knows the node as a modality;
the node runs as ``python -m pipelines.dicom_node`` sending its results to Orthanc. A native RSNA test
radiograph wrapped as a DX (sex and birth date in the header) is stored into Orthanc over REST, Orthanc
C-STOREs it to the node, and the test finds the node's Secondary Capture and SR in the same study and reads
the bone age from the SR: it must equal the library's prediction for that image.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from boneage.clinic import dicom_results
from pipelines.cli import free_loopback_port, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORTHANC_AET, NODE_AET = "ORTHANC", "BONEAGE"
CASE = "4361"  # official test radiograph, 568x759 native, boy


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                            if Path(p).is_file()), None)



class OrthancServer:
    """A throwaway Orthanc on loopback ports, its REST API as small helpers."""

    def __init__(self, workdir: Path, node_port: int):
        binary = orthanc_binary()
        if binary is None:
            pytest.skip("Orthanc is not installed (Debian package 'orthanc'; ./test.sh installs it with apt-get when "
                        "run as root): the DICOM node end-to-end test needs a real PACS", allow_module_level=True)
        self.http_port, self.dicom_port = free_loopback_port(), free_loopback_port()
        db = workdir / "db"
        db.mkdir()
        config = {"Name": "boneage-test", "StorageDirectory": str(db), "IndexDirectory": str(db),
                  "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": ORTHANC_AET,
                  "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [],
                  "DicomModalities": {"boneage": [NODE_AET, "127.0.0.1", node_port]}, "DicomScuTimeout": 60,
                  "HttpTimeout": 120, "StableAge": 1}
        (workdir / "orthanc.json").write_text(json.dumps(config))
        self.log = open(workdir / "orthanc.log", "w")
        self.proc = subprocess.Popen([binary, str(workdir / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT)
        self.workdir = workdir
        deadline = time.time() + 30
        while True:
            try:
                self.get("/system")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    pytest.fail(f"Orthanc did not start: {(workdir / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.2)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method,
                                     headers={"Content-Type": content_type} if body is not None else {})
        with urllib.request.urlopen(req, timeout=120) as resp:
            data = resp.read()
        return data

    def get(self, path: str):
        return json.loads(self.request("GET", path))

    def post_json(self, path: str, obj) -> dict:
        return json.loads(self.request("POST", path, json.dumps(obj).encode()))

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.log.close()


@pytest.fixture(scope="module")
def node_port() -> int:
    return free_loopback_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, node_port):
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), node_port)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(orthanc, node_port, subprocess_env, repo_root, tmp_path_factory):
    """``python -m pipelines.dicom_node`` sending to the Orthanc above; yields once it answers C-ECHO."""
    from pynetdicom import AE

    log_path = tmp_path_factory.mktemp("node") / "node.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.dicom_node", "--ae-title", NODE_AET, "--port",
                             str(node_port), "--dest-ae", ORTHANC_AET, "--dest-host", "127.0.0.1", "--dest-port",
                             str(orthanc.dicom_port)], cwd=repo_root, env=subprocess_env, stdout=log,
                            stderr=subprocess.STDOUT)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    deadline = time.time() + 300  # model, LOF and imports: ~6 s on an idle machine, minutes on a busy one
    while True:
        assoc = ae.associate("127.0.0.1", node_port, ae_title=NODE_AET)
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            assert status.Status == 0x0000
            break
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the DICOM node did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    yield proc, log_path
    stop_process(proc, timeout=30)
    log.close()


def c_store(port: int, data: bytes):
    """C-STORE one DICOM file (bytes) to the node as TESTSCU; returns the status dataset."""
    from pynetdicom import AE

    ds = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established, "the node refused the association"
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


def wait_for_results(orthanc: OrthancServer, study_uid: str, timeout: float = 120) -> dict[str, dict]:
    """Modality -> instance tags of the node's SC and SR in the study with ``study_uid`` (waits for both)."""
    deadline = time.time() + timeout
    found: dict[str, dict] = {}
    while time.time() < deadline:
        studies = orthanc.post_json("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
        for study in studies:
            for series in orthanc.get(f"/studies/{study}/series"):
                for inst in series["Instances"]:
                    tags = orthanc.get(f"/instances/{inst}/simplified-tags")
                    if tags.get("Manufacturer") == dicom_results.MANUFACTURER:
                        found[tags["Modality"]] = {**tags, "_id": inst}
        if {"OT", "SR"} <= set(found):
            return found
        time.sleep(0.5)
    return found


def test_rejected_images_get_a_failure_status_and_the_node_keeps_serving(node, node_port, hand_dx, data_dir):
    png = data_dir / "test" / f"{CASE}.png"
    chest = c_store(node_port, hand_dx(png, body_part="CHEST"))
    assert chest.Status == 0xC000
    assert "body part" in str(chest.get("ErrorComment", ""))
    no_sex = c_store(node_port, hand_dx(png, sex=None))
    assert no_sex.Status == 0xC000
    assert "sex" in str(no_sex.get("ErrorComment", ""))
    # a CT image: its storage class is not offered, so the node declines it during association negotiation
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    assoc = ae.associate("127.0.0.1", node_port, ae_title=NODE_AET)
    assert not assoc.is_established or not assoc.accepted_contexts
    if assoc.is_established:
        assoc.release()
    ok = c_store(node_port, hand_dx(png, patient_id="BA-TEST-2"))  # a valid image right after: still served
    assert ok.Status == 0x0000
    _, log_path = node
    text = log_path.read_text()
    assert "CHEST" in text and "no patient sex in the header" in text  # the reasons are logged in full


def test_orthanc_sends_a_radiograph_and_gets_back_sc_and_sr_with_the_library_bone_age(orthanc, node, hand_dx,
                                                                                       data_dir):
    from boneage.inference.assess import assess

    png = data_dir / "test" / f"{CASE}.png"
    male = bool(pd.read_csv(data_dir / "test.csv", dtype={"id": str}).set_index("id").loc[CASE, "male"])
    data = hand_dx(png, sex="M" if male else "F")
    source = pydicom.dcmread(io.BytesIO(data))
    stored = json.loads(orthanc.request("POST", "/instances", data, "application/dicom"))
    answer = orthanc.post_json(f"/modalities/boneage/store", {"Resources": [stored["ID"]], "Synchronous": True})
    assert answer.get("FailedInstancesCount", 0) == 0, answer

    results = wait_for_results(orthanc, source.StudyInstanceUID)
    assert set(results) >= {"OT", "SR"}, f"node results in Orthanc: {sorted(results)}; node log: {node[1].read_text()[-2000:]}"
    sc_tags, sr_tags = results["OT"], results["SR"]
    series = {sc_tags["SeriesInstanceUID"], sr_tags["SeriesInstanceUID"], source.SeriesInstanceUID}
    assert len(series) == 3  # a new series each, the original's untouched
    assert sc_tags["StudyInstanceUID"] == sr_tags["StudyInstanceUID"] == source.StudyInstanceUID
    assert sc_tags["PatientID"] == sr_tags["PatientID"] == source.PatientID

    sr = pydicom.dcmread(io.BytesIO(orthanc.request("GET", f"/instances/{sr_tags['_id']}/file")))
    expected = assess(png, "M" if male else "F")  # the library's one assessment of the PNG itself
    assert dicom_results.read_bone_age(sr) == pytest.approx(expected.boneage_months, abs=1e-3)
    evaluations = dicom_results.read_evaluations(sr)
    assert evaluations["Skeletal maturity stage"] == expected.stage
    measured = dicom_results.read_measurements(sr)
    lo, hi = expected.intervals["90"]
    assert measured["Lower bound of 90% prediction interval of bone age"] == pytest.approx(lo, abs=1e-3)
    assert measured["Upper bound of 90% prediction interval of bone age"] == pytest.approx(hi, abs=1e-3)
    # birth 2012-01-15, study 2026-01-10: 5109 days, 14 years less 5 days
    assert measured["Chronological age"] == pytest.approx(5109 / 30.4375, abs=0.05)

    sc = pydicom.dcmread(io.BytesIO(orthanc.request("GET", f"/instances/{sc_tags['_id']}/file")))
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.BurnedInAnnotation == "YES"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.pixel_array.shape[2] == 3
