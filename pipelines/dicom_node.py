"""The DICOM node: a Storage SCP that reads the bone age of every hand radiograph it receives and sends the
reading back to the PACS as a Secondary Capture and a Structured Report in the same study.

    boneage dicom-node --port 11112 --dest-ae PACS --dest-host pacs.example --dest-port 104

(``python -m pipelines.dicom_node`` is the same command.) Stop with Ctrl-C or SIGTERM. What the node accepts,
refuses and sends is described by :mod:`boneage.clinic.dicom_node`, whose text ``--help`` prints below this.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import boneage.clinic.dicom_node as node_logic
from boneage.clinic.dicom_node import BoneAgeNode, Destination, NodeConfig, load_node_predictor, log, port_problem
from boneage.settings import add_path_flags


def _destination(args) -> Destination:
    return Destination(args.dest_ae, args.dest_host, args.dest_port)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__ + "\n" + node_logic.__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ae-title", default="BONEAGE", help="this node's AE title (default BONEAGE)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    ap.add_argument("--port", type=int, default=11112, help="port to listen on (default 11112)")
    ap.add_argument("--dest-ae", required=True, help="AE title the results are sent to (e.g. the PACS)")
    ap.add_argument("--dest-host", required=True, help="host of the destination AE")
    ap.add_argument("--dest-port", type=int, required=True, help="port of the destination AE")
    ap.add_argument("--default-sex", choices=["M", "F"], help="sex for images whose header has none (default: refuse them)")
    ap.add_argument("--site", help="site profile: a name in artifacts/sites or a path (boneage calibrate-site)")
    add_path_flags(ap, data=False, model=True)
    ap.add_argument("--outlier-check", action=argparse.BooleanOptionalAction, default=True,
                    help="mark images unlike the training radiographs (shipped model only; default on)")
    ap.add_argument("--queue-size", type=int, default=8, help="images waiting for assessment before the node "
                                                                "answers 'busy' (default 8)")
    ap.add_argument("--allow-aet", action="append", default=[], metavar="TITLE",
                    help="accept associations only from this calling AE title (repeat for several; default: any)")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("pynetdicom", "highdicom"):  # their INFO lines are per PDU / per copied module
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name, port in (("--port", args.port), ("--dest-port", args.dest_port)):
        if not 0 < port < 65536:
            ap.error(f"{name} {port} is not a TCP port (1-65535)")
    bad = [t for t in (args.ae_title, args.dest_ae, *args.allow_aet) if not t.strip() or len(t) > 16]
    if bad:
        ap.error(f"AE titles have 1 to 16 characters: {', '.join(repr(t) for t in bad)}")
    config = NodeConfig(_destination(args), args.ae_title, args.host, args.port,
                        {"M": True, "F": False}.get(args.default_sex) if args.default_sex else None,
                        args.site, args.model_dir, args.outlier_check, args.queue_size,
                        allowed_callers=tuple(t.strip() for t in args.allow_aet))
    if problem := port_problem(config.host, config.port):  # before the model is loaded: fail fast
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        predictor = load_node_predictor(config)
    except (ValueError, FileNotFoundError) as exc:  # ModelNotFoundError, SiteProfileError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    node = BoneAgeNode(config, predictor)
    try:
        node.start()
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port} ({exc.strerror or exc}); choose another --port.",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    log.info("stopping: %d received, %d refused, %d assessed, %d sent, %d failed", node.stats.received,
             node.stats.refused, node.stats.assessed, node.stats.sent, node.stats.failed)
    node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
