"""Measure the HTTP service under a burst: latency one at a time, then N concurrent uploads, and the server's
peak memory (VmHWM) before and after the burst; prints the numbers.

    python -m pipelines.benchmarks.service --image $BONEAGE_DATA/test/4361.png --concurrent 32 --workers 2

It starts ``python -m pipelines.serve`` on a free loopback port (killed at the end). ``--dicom`` wraps the
image into an uncompressed 16-bit DICOM first (a bigger upload, as a PACS would send). Every answer must be
200 with the same ``boneage_pred`` as the first; the exit status is 1 otherwise.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.cli import free_loopback_port


def _post(port: int, data: bytes, name: str, sex: str) -> tuple[int, bytes, float]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="sex"\r\n\r\n{sex}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n\r\n').encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/assessments", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        resp = conn.getresponse()
        return resp.status, resp.read(), time.perf_counter() - t0
    finally:
        conn.close()


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _as_dicom(path: Path) -> bytes:
    from boneage.io.dicom_wrap import dx_bytes

    return dx_bytes(path, bits_stored=12)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, help="a radiograph (PNG/JPEG/DICOM)")
    ap.add_argument("--sex", default="F")
    ap.add_argument("--dicom", action="store_true", help="send it as an uncompressed 16-bit DICOM")
    ap.add_argument("--sequential", type=int, default=5, help="requests one at a time (default 5)")
    ap.add_argument("--concurrent", type=int, default=32, help="requests sent at once (default 32)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-pending", type=int, default=64)
    args = ap.parse_args(argv)
    path = Path(args.image)
    if not path.is_file():
        ap.error(f"--image {path} not found")
    data, name = (_as_dicom(path), path.stem + ".dcm") if args.dicom else (path.read_bytes(), path.name)
    port = free_loopback_port()
    server = subprocess.Popen([sys.executable, "-m", "pipelines.serve", "--port", str(port), "--workers",
                               str(args.workers), "--max-pending", str(args.max_pending), "--log-level", "warning"],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        deadline = time.time() + 300
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    print("error: the service did not start", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        status, body, _ = _post(port, data, name, args.sex)  # warm-up
        if status != 200:
            print(f"error: {status} {body[:300]!r}", file=sys.stderr)
            return 1
        reference = json.loads(body)["boneage_pred"]
        idle_mb = _peak_mb(server.pid)
        seq = [_post(port, data, name, args.sex) for _ in range(args.sequential)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrent) as pool:
            burst = list(pool.map(lambda _: _post(port, data, name, args.sex), range(args.concurrent)))
        wall = time.perf_counter() - t0
        ok = all(s == 200 and json.loads(b)["boneage_pred"] == reference for s, b, _ in seq + burst)
        lat = sorted(t for _, _, t in burst)
        print(f"upload {len(data) / 2**20:.2f} MB ({name}), workers {args.workers}, {os.cpu_count()} CPUs")
        print(f"one at a time: median {statistics.median(t for _, _, t in seq) * 1000:.0f} ms over {len(seq)}")
        print(f"{args.concurrent} at once: all answered in {wall:.2f} s ({args.concurrent / wall:.1f} per s), "
              f"latency median {statistics.median(lat) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
        print(f"server peak memory: {idle_mb:.0f} MB after warm-up, {_peak_mb(server.pid):.0f} MB after the burst")
        print(f"all {len(seq) + len(burst)} answers 200 with the same bone age ({reference}): {ok}")
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
