"""Serve bone-age assessments over HTTP (FastAPI + uvicorn): see boneage.clinic.service for the API.

    python -m pipelines.serve --host 127.0.0.1 --port 8000
    curl -F image=@hand.png -F sex=F -F chronological_age_months=130 http://127.0.0.1:8000/v1/assessments
    curl -F image=@hand.dcm -H 'Accept: application/pdf' -o report.pdf http://127.0.0.1:8000/v1/assessments

OpenAPI docs: http://HOST:PORT/docs. The service listens on the loopback address unless --host says
otherwise; it has no authentication of its own, so put it behind the hospital's gateway before opening it.
Exit status 2 when the options or the model cannot be used.
"""
from __future__ import annotations

import argparse
import sys

from boneage.clinic.service import DEFAULT_MAX_UPLOAD_MB, ServiceSettings
from boneage.settings import add_path_flags


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    ap.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                    help=f"largest upload accepted, MB (default {DEFAULT_MAX_UPLOAD_MB}); larger ones get 413 unread")
    ap.add_argument("--workers", type=int, default=2,
                    help="threads doing the CPU work (default 2); further requests queue")
    ap.add_argument("--max-pending", type=int, default=32,
                    help="assessments admitted at once, running or queued (default 32); more get 503 Retry-After")
    add_path_flags(ap, data=False, model=True)
    ap.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = ap.parse_args(argv)
    if not 0 < args.port < 65536:
        ap.error(f"--port {args.port} is not a port number (1-65535)")
    try:
        settings = ServiceSettings(int(args.max_upload_mb * 2**20), args.workers, args.max_pending, args.model_dir)
    except ValueError as exc:
        ap.error(str(exc))
    from boneage.inference.predictor import ModelNotFoundError

    try:  # load before listening, so that a missing model is a message, not a failed start-up traceback
        from boneage.clinic.service import service_predictor

        service_predictor(settings)
    except (ModelNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from boneage.clinic.service import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
