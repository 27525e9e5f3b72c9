"""The HTTP service through a real uvicorn process (python -m pipelines.serve on a free loopback port): a PNG
and a DICOM give the library's numbers, a corrupt file and an oversized upload get a 4xx that says what is
wrong, 8 concurrent requests are all answered with the numbers of one at a time, the PDF report comes back
for Accept: application/pdf, and /v1/model, /health and /docs answer."""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from boneage.inference.assess import assess, row_columns
from pipelines.cli import free_loopback_port, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_UPLOAD_MB = 8
CASES = ["4361", "4362", "4365", "4366"]  # official test radiographs (4362 and 4366 have no reference age)



@pytest.fixture(scope="module")
def server(repo_root, subprocess_env, tmp_path_factory):
    port = free_loopback_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--max-upload-mb", str(MAX_UPLOAD_MB), "--workers", "2", "--max-pending", "16"],
                                cwd=repo_root, env=subprocess_env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the service exited with {proc.returncode}:\n{log.read_text()}", pytrace=False)
        try:
            if _request(port, "GET", "/health")[0] == 200:
                break
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"the service did not answer /health within 300 s:\n{log.read_text()}", pytrace=False)
        time.sleep(0.5)
    yield port
    stop_process(proc, timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()


def _request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             timeout: float = 300) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _assess(port: int, data: bytes, filename: str, query: str = "", accept: str = "application/json",
            **fields) -> tuple[int, dict, bytes]:
    body, ctype = _multipart({k: str(v) for k, v in fields.items()}, filename, data)
    return _request(port, "POST", f"/v1/assessments{query}", body, {"Content-Type": ctype, "Accept": accept})


def _json(result) -> dict:
    status, _, body = result
    assert status == 200, body
    return json.loads(body)


def test_png_gives_the_library_row(server, data_dir):
    path = data_dir / "test" / "4361.png"
    row = _json(_assess(server, path.read_bytes(), "4361.png", sex="M", chronological_age_months="150"))
    expected = assess(path, "M", chronological_age=150, name="4361.png").as_row()
    assert list(row) == row_columns(["Child", "Adolescent", "Adult"])
    assert row == expected  # the same keys and the same numbers as pipelines.predict's row
    assert row["maturity"] == "advanced" and row["unlike_training_data"] is False


def test_dicom_reads_sex_and_age_from_its_header(server, data_dir, make_dicom):
    png = data_dir / "test" / "4365.png"
    data = make_dicom(png, PatientID="X1", PatientSex="M", PatientBirthDate="20150301", StudyDate="20200915")
    row = _json(_assess(server, data, "4365.dcm"))  # no sex, no age: both from the header
    plain = _json(_assess(server, png.read_bytes(), "4365.png", sex="M"))
    assert row["male"] is True and row["boneage_pred"] == plain["boneage_pred"]
    assert "sex M from the DICOM PatientSex" in row["notes"] and plain["notes"] is None
    assert row["chronological_age_months"] == pytest.approx(66.5, abs=0.1)  # 5 years 6.5 months
    assert row["maturity"] in ("delayed", "normal", "advanced") and plain["maturity"] is None
    assert "sex is needed" in json.loads(_assess(server, make_dicom(png), "nosex.dcm")[2])["detail"]


def test_bad_input_gets_a_4xx_that_says_why(server, data_dir):
    status, _, body = _assess(server, b"\x89PNG\r\n\x1a\n this is junk \x00\x01" * 20, "broken.png", sex="F")
    assert status == 422 and "broken.png: not a PNG, JPEG or DICOM image" in json.loads(body)["detail"]
    real = (data_dir / "test" / "4361.png").read_bytes()
    status, _, body = _assess(server, real[: len(real) // 2], "cut.png", sex="F")
    assert status == 422 and "cut.png" in json.loads(body)["detail"]
    status, _, body = _assess(server, real, "4361.png", sex="X")
    assert status == 422 and "sex 'X' is not understood" in json.loads(body)["detail"]
    status, _, body = _assess(server, real, "4361.png", sex="F", chronological_age_months="ten")
    assert status == 422 and "chronological age 'ten' is not a number" in json.loads(body)["detail"]
    status, _, body = _assess(server, real, "4361.png", sex="F", site="nowhere")
    assert status == 422 and "unknown site profile 'nowhere'; available: rsna-official" in json.loads(body)["detail"]
    status, _, body = _assess(server, b"", "empty.png", sex="F")
    assert status == 422 and "empty.png: file is empty" in json.loads(body)["detail"] and b"Traceback" not in body


def test_oversized_upload_is_refused_before_it_is_read(server):
    """Content-Length above the limit: the 413 arrives after the headers and 64 KB of a 9 MB body."""
    size = (MAX_UPLOAD_MB + 1) << 20
    with socket.create_connection(("127.0.0.1", server), timeout=60) as s:
        s.sendall(f"POST /v1/assessments HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  f"Content-Length: {size}\r\n\r\n".encode() + b"\0" * 65536)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:200]
    assert f"limit of {MAX_UPLOAD_MB:.1f} MB" in json.loads(body)["detail"]


def test_eight_concurrent_requests_get_the_numbers_of_one_at_a_time(server, data_dir):
    images = [(cid, (data_dir / "test" / f"{cid}.png").read_bytes()) for cid in CASES]
    one_by_one = {cid: _json(_assess(server, data, f"{cid}.png", sex="F")) for cid, data in images}
    jobs = images * 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: _assess(server, job[1], f"{job[0]}.png", sex="F"), jobs))
    assert len(results) == 8
    for (cid, _), result in zip(jobs, results):
        assert _json(result) == one_by_one[cid]


def test_pdf_report_and_heatmap(server, data_dir, poppler):
    pdf_text, pdf_pages = poppler
    data = (data_dir / "test" / "4361.png").read_bytes()
    row = _json(_assess(server, data, "4361.png", query="?heatmap=true", sex="M"))
    import base64
    import io

    from PIL import Image

    heat = Image.open(io.BytesIO(base64.b64decode(row.pop("heatmap_png"))))
    assert heat.size == (100, 100) and heat.mode == "RGB"
    status, headers, pdf = _assess(server, data, "4361.png", accept="application/pdf", sex="M")
    assert status == 200 and headers["content-type"] == "application/pdf"
    text = " ".join(pdf_text(pdf).split())
    age = re.search(r"Bone age: ([\d.]+) months", text)
    interval = re.search(r"90 % prediction interval ([\d.]+) - ([\d.]+) months", text)
    assert age and abs(float(age.group(1)) - row["boneage_pred"]) <= 0.051
    assert interval and abs(float(interval.group(1)) - row["lower_90"]) <= 0.051
    assert abs(float(interval.group(2)) - row["upper_90"]) <= 0.051
    assert "Decision support only" in text and len(pdf_pages(pdf)) == 1


def test_model_health_and_docs(server):
    status, _, body = _request(server, "GET", "/v1/model")
    model = json.loads(body)
    assert status == 200 and len(model["model_sha256"]) >= 64 and model["geometry"]["base_size"] == 100
    assert model["metrics"]["official_test"]["mae"] > 0 and model["row_columns"][2] == "boneage_pred"
    assert model["outlier_check"] is True and "rsna-official" in model["sites"]
    assert json.loads(_request(server, "GET", "/health")[2])["status"] == "ok"
    status, _, page = _request(server, "GET", "/docs")
    assert status == 200 and b"swagger" in page.lower()
    spec = json.loads(_request(server, "GET", "/openapi.json")[2])
    assert "/v1/assessments" in spec["paths"]


def test_serve_refuses_bad_options(repo_root, subprocess_env):
    proc = subprocess.run([sys.executable, "-m", "pipelines.serve", "--port", "0"], cwd=repo_root,
                          env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is not a port number" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pipelines.serve", "--model-dir", os.devnull + "_none"],
                          cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "model.pt is missing" in proc.stderr and "Traceback" not in proc.stderr


def test_a_full_queue_answers_503_before_reading_the_body():
    """The admission limit itself (boneage.clinic.service.UploadGuard), driven as ASGI: with max_pending requests in
    flight the next one gets 503 with Retry-After, and its body is never asked for."""
    import asyncio

    from boneage.clinic.service import UploadGuard

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the request was admitted")

    async def receive():
        raise AssertionError("the body was read")

    sent = []

    async def send(message):
        sent.append(message)

    guard = UploadGuard(app, max_bytes=1 << 20, max_pending=2, paths=("/v1/assessments",))
    guard.active = 2
    scope = {"type": "http", "method": "POST", "path": "/v1/assessments", "headers": [(b"content-length", b"100")]}
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 503 and (b"retry-after", b"2") in sent[0]["headers"]
    assert "the service is busy" in json.loads(sent[1]["body"])["detail"]


def test_clinical_fields_and_the_followup_endpoint(server, data_dir):
    png = data_dir / "test" / "4365.png"
    rows = [_json(_assess(server, png.read_bytes(), f"v{i}.png", sex="M", patient_id="P9", birth_date="2012-01-15",
                          study_date=d, height_cm="140"))
            for i, d in enumerate(("2022-01-15", "2023-01-15"))]
    assert rows[0]["patient_id"] == "P9" and rows[0]["study_date"] == "2022-01-15"
    assert rows[0]["chronological_age_months"] == pytest.approx(120, abs=0.1)
    assert rows[0]["sds_reference"] == "Brush Foundation (Greulich & Pyle)" and rows[0]["bone_age_sds"] is not None
    bad = _json(_assess(server, png.read_bytes(), "b.png", sex="M", study_date="2022-02-30"))
    assert "not a date" in bad["notes"] and bad["boneage_pred"] == rows[0]["boneage_pred"]
    status, _, body = _request(server, "POST", "/v1/followups", json.dumps({"films": rows}).encode(),
                               {"Content-Type": "application/json"})
    assert status == 200, body
    (fu,) = json.loads(body)["followups"]
    assert fu["patient_id"] == "P9" and fu["films"] == 2 and fu["ba_velocity"] == pytest.approx(0.0, abs=0.01)
    assert fu["ba_velocity_lower_90"] < 0 < fu["ba_velocity_upper_90"]  # the same film twice, a year apart
    assert _request(server, "POST", "/v1/followups", b"[1]", {"Content-Type": "application/json"})[0] == 422


# -- #31.5: idle uploads, non-Latin-1 names, sex ---------------------------------------------------------------

def test_half_sent_posts_do_not_block_real_requests(server, data_dir):
    """32 POSTs that send their headers and part of their body, then stall, are not admitted work: a real
    request meanwhile gets its answer, not 503 (the server admits 16)."""
    import socket

    idle = []
    try:
        for _ in range(32):
            s = socket.create_connection(("127.0.0.1", server), timeout=10)
            s.sendall(b"POST /v1/assessments HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"sex\"\r\n\r\nF")
            idle.append(s)
        time.sleep(1.0)
        data = (data_dir / "test" / "4361.png").read_bytes()
        status, _, body = _assess(server, data, "4361.png", sex="M")
        assert status == 200, body
    finally:
        for s in idle:
            s.close()


def test_idle_body_times_out_with_408():
    """A body that stops arriving is answered 408 after the guard's idle timeout (driven as ASGI)."""
    import asyncio

    from boneage.clinic.service import UploadGuard

    async def app(scope, receive, send):
        await receive()

    async def receive():
        await asyncio.sleep(60)

    sent = []

    async def send(message):
        sent.append(message)

    guard = UploadGuard(app, max_bytes=1 << 20, max_pending=2, paths=("/v1/assessments",), body_timeout_s=0.2)
    scope = {"type": "http", "method": "POST", "path": "/v1/assessments", "headers": []}
    t0 = time.time()
    asyncio.run(guard(scope, receive, send))
    assert time.time() - t0 < 5 and sent[0]["status"] == 408, sent
    assert guard.active == 0


def test_non_latin1_file_name_with_pdf_and_strict_sex(server, data_dir):
    data = (data_dir / "test" / "4361.png").read_bytes()
    status, headers, body = _assess(server, data, "рука-4361.png", accept="application/pdf", sex="F")
    assert status == 200 and body.startswith(b"%PDF"), body[:200]
    assert "filename*=UTF-8''" in headers["content-disposition"], headers
    for good in ("m", "Male", "FEMALE", "f"):
        assert _assess(server, data, "4361.png", sex=good)[0] == 200
    for bad in ("yes", "n", "1", "x"):
        status, _, body = _assess(server, data, "4361.png", sex=bad)
        assert status == 422 and "M or F" in json.loads(body)["detail"], (bad, body)
