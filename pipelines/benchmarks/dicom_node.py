"""How fast the DICOM node answers and reads, and how much memory it holds, on real radiographs.

    python -m pipelines.benchmarks.dicom_node [--data-dir DIR] [--images 20]

Starts the node in this process (shipped model, outlier check on) with a throwaway Storage SCP on loopback as
its destination, sends ``--images`` official test radiographs (native size, wrapped as DX with sex and birth
date) in one association, one after the other as a PACS does, and prints: how long the sender waits for each
C-STORE answer (the node's checks), the time from sending an image until its SC and SR have arrived, the
throughput, and the process's peak resident memory before and after.
"""
from __future__ import annotations

import argparse
import io
import resource
import sys
import threading
import time

import numpy as np
import pandas as pd

from pipelines.cli import free_loopback_port
from boneage.settings import add_path_flags


def _dx(png, male: bool) -> "object":
    import pydicom

    from boneage.io.dicom_wrap import dx_bytes

    return pydicom.dcmread(io.BytesIO(dx_bytes(png, PatientID=png.stem, PatientName="Bench^Case",
                                               PatientSex="M" if male else "F", PatientBirthDate="20120115",
                                               StudyDate="20260110")))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    from pynetdicom import AE, evt

    from boneage.config import resolve_data_dir
    from boneage.clinic.dicom_node import BoneAgeNode, Destination, NodeConfig, load_node_predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--images", type=int, default=20, help="official test radiographs to send (default 20)")
    args = ap.parse_args(argv)
    data = resolve_data_dir(args.data_dir)
    cases = pd.read_csv(data / "test.csv", dtype={"id": str}).head(args.images)

    arrived: dict[str, dict[str, float]] = {}  # source study uid -> modality -> time
    lock = threading.Lock()

    def on_result(event):
        ds = event.dataset
        with lock:
            arrived.setdefault(ds.StudyInstanceUID, {})[ds.Modality] = time.perf_counter()
        return 0x0000

    sink = AE(ae_title="SINK")
    sink.add_supported_context("1.2.840.10008.5.1.4.1.1.7")
    sink.add_supported_context("1.2.840.10008.5.1.4.1.1.88.33")
    sink_port, node_port = free_loopback_port(), free_loopback_port()
    sink_server = sink.start_server(("127.0.0.1", sink_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_result)])

    rss0 = _peak_mb()
    t = time.perf_counter()
    config = NodeConfig(Destination("SINK", "127.0.0.1", sink_port), port=node_port, queue_size=len(cases) + 1)
    node = BoneAgeNode(config, load_node_predictor(config))
    node.start()
    print(f"node ready in {time.perf_counter() - t:.1f} s (model, outlier check); peak RSS {_peak_mb():.0f} MB "
          f"(before: {rss0:.0f} MB)")
    datasets = [_dx(data / "test" / f"{cid}.png", bool(m)) for cid, m in zip(cases["id"], cases["male"])]
    sizes = [ds.Rows * ds.Columns / 1e6 for ds in datasets]

    scu = AE(ae_title="BENCH")
    scu.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1")
    assoc = scu.associate("127.0.0.1", node_port, ae_title="BONEAGE")
    if not assoc.is_established:
        print("error: could not associate with the node", file=sys.stderr)
        return 1
    sent_at, answer_s = {}, []
    start = time.perf_counter()
    for ds in datasets:
        t0 = time.perf_counter()
        status = assoc.send_c_store(ds)
        answer_s.append(time.perf_counter() - t0)
        sent_at[ds.StudyInstanceUID] = t0
        if status.Status != 0x0000:
            print(f"warning: {ds.PatientID} answered {status.Status:#06x}", file=sys.stderr)
    assoc.release()
    deadline = time.time() + 60 + 10 * len(datasets)
    while time.time() < deadline:
        with lock:
            done = sum(1 for uid in sent_at if {"OT", "SR"} <= set(arrived.get(uid, {})))
        if done + node.stats.failed >= len(sent_at):
            break
        time.sleep(0.2)
    total = time.perf_counter() - start
    with lock:
        e2e = [max(arrived[uid].values()) - t0 for uid, t0 in sent_at.items() if {"OT", "SR"} <= set(arrived.get(uid, {}))]
    node.stop()
    sink_server.shutdown()
    a = np.asarray(answer_s)
    print(f"{len(datasets)} radiographs, {np.mean(sizes):.2f} MP on average (max {np.max(sizes):.2f} MP)")
    print(f"C-STORE answer (the node's checks while the sender waits): median {np.median(a) * 1000:.0f} ms, "
          f"max {a.max() * 1000:.0f} ms")
    if e2e:
        e = np.asarray(e2e)
        print(f"sent -> SC and SR received: first {e[0]:.2f} s, median {np.median(e):.2f} s, max {e.max():.2f} s "
              f"(a burst queues behind the one worker)")
    print(f"{len(e2e)} of {len(datasets)} answered in {total:.1f} s: {len(e2e) / total * 60:.0f} radiographs a minute")
    print(f"peak RSS {_peak_mb():.0f} MB; node counts: {node.stats}")
    return 0 if len(e2e) == len(datasets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
