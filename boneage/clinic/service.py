"""The HTTP service: bone-age assessments over HTTP for other systems (FastAPI; run it with
``python -m pipelines.serve``). OpenAPI docs at ``/docs``.

* ``POST /v1/assessments``: multipart ``image`` (PNG, JPEG or DICOM), ``sex`` (M/F; a DICOM's PatientSex
  when left out), optional ``chronological_age_months`` (a DICOM's birth and study dates or PatientAge when
  left out) and ``site`` (a site profile). Answers the row every door shares
  (:meth:`boneage.inference.assess.Assessment.as_row`, the keys of ``pipelines.predict``'s CSV) as JSON; with
  ``?heatmap=true`` also ``heatmap_png`` (base64 PNG of the Grad-CAM overlay on the model input); with
  ``Accept: application/pdf`` the printable report (:func:`boneage.clinic.report.render_report`) instead.
* ``GET /v1/model``: the model's fingerprint, metrics, geometry and what each answer holds.
* ``GET /health``: liveness and the current queue.

Holding up under load: uploads above ``max_upload_bytes`` are refused with 413 from the Content-Length
header, or as soon as a streamed body passes the limit, before they are read whole (:class:`UploadGuard`);
the CPU-bound work (decoding, the network, Grad-CAM, the PDF) runs in a pool of ``workers`` threads, so a
burst of requests queues; at most ``max_pending`` assessments are admitted at once (running or queued,
uploads spooled to disk by the multipart parser above 1 MB), and more get 503 with Retry-After instead of
exhausting memory. The shared predictor is thread-safe: predictions run on the traced network, explanations
hold :data:`boneage.nn.forward.EAGER_LOCK`, and the site and fingerprint caches of :mod:`boneage.inference.assess`
are locked. Bad input gets a 4xx whose ``detail`` says what is wrong; an unexpected failure a 500 naming
the error type, never a traceback.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from boneage.inference.assess import AssessmentInputError, assess, model_sha256, outlier_check_problem, row_columns, \
    shipped_predictor
from boneage.io.imaging import ImageLoadError
from boneage.evaluation.site_calibration import LEVELS, SiteProfileError, available_sites
from boneage.clinic.report import gradcam, render_report, report_name
from boneage.evidence.render import overlay
from boneage.inference.predictor import load_predictor
from PIL import Image
from boneage.growth.clinical import parse_date
from boneage.growth.followup import Film, follow_up, group_films
from boneage.inference.series import measured_retest_sd
from boneage.io.tables import parse_male

API_VERSION = "v1"
DEFAULT_MAX_UPLOAD_MB = 64  # an uncompressed 16-bit CR/DX of 43 x 35 cm at 0.1 mm is about 30 MB


@dataclass(frozen=True)
class ServiceSettings:
    """``max_upload_bytes``: largest request body accepted; ``workers``: threads doing the CPU work;
    ``max_pending``: assessments admitted at once (running + queued); ``model_dir``: a model folder
    (default: the shipped model with its outlier check)."""
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20
    workers: int = 2
    max_pending: int = 32
    model_dir: str | None = None

    def __post_init__(self):
        if self.max_upload_bytes < 1024:
            raise ValueError(f"max_upload_bytes {self.max_upload_bytes} is below 1 KB: no radiograph fits")
        if self.workers < 1 or self.max_pending < 1:
            raise ValueError("workers and max_pending must be at least 1")


BODY_IDLE_TIMEOUT_S = 30.0  # a request body that sends nothing for this long is answered 408


class UploadGuard:
    """ASGI middleware on the upload path (POST only): at most ``max_pending`` assessments admitted at once, and
    bodies above ``max_bytes`` refused with 413 (from the Content-Length header before anything is read, or,
    for a streamed body, as soon as the bytes received pass the limit).

    Only admitted work counts against the limit: a request is admitted when its whole body has arrived (the
    multipart parser spools it to disk above 1 MB), so half-sent uploads cannot take the places of real
    requests (issue #31: 32 stalled POSTs made every real request get 503). A full queue answers 503 with
    Retry-After, before the body is read when it is already full; a body that sends nothing for
    ``body_timeout_s`` is answered 408. One event loop, so a plain counter is safe."""

    def __init__(self, app, max_bytes: int, max_pending: int, paths: tuple[str, ...],
                 body_timeout_s: float = BODY_IDLE_TIMEOUT_S):
        self.app, self.max_bytes, self.max_pending, self.paths, self.active = app, max_bytes, max_pending, paths, 0
        self.body_timeout_s = body_timeout_s

    def too_large(self, size: str) -> str:
        return (f"the upload ({size}) is larger than this service's limit of {self.max_bytes / 2**20:.1f} MB; send "
                "the radiograph alone (one image, compressed if possible), or start the service with a larger "
                "--max-upload-mb")

    def busy(self) -> str:
        return (f"the service is busy ({self.active} assessments running or queued, the limit is "
                f"{self.max_pending}); retry in a few seconds")

    @staticmethod
    async def answer(send, status: int, detail: str, headers: tuple = ()) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), *headers]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") not in self.paths or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self.answer(send, 413, self.too_large(f"{int(length) / 2**20:.1f} MB"))
        if self.active >= self.max_pending:
            return await self.answer(send, 503, self.busy(), ((b"retry-after", b"2"),))
        received, admitted, started = 0, False, False

        async def limited_receive():
            nonlocal received, admitted
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s) if not admitted else await receive()
            except asyncio.TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request" and not admitted:
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI re-raises it from the form parser: a 413 answer
                    raise StarletteHTTPException(413, self.too_large(f"more than {received / 2**20:.1f} MB"))
                if not message.get("more_body", False):  # the whole body is here: admit the work, or refuse it
                    if self.active >= self.max_pending:
                        raise StarletteHTTPException(503, self.busy(), headers={"Retry-After": "2"})
                    self.active += 1
                    admitted = True
            return message

        async def tracked_send(message):
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTimeout:
            if not started:
                await self.answer(send, 408, f"the request body stopped arriving (nothing for "
                                             f"{self.body_timeout_s:.0f} s); send the whole upload at once")
        finally:
            if admitted:
                self.active -= 1


class BodyTimeout(Exception):
    """A request body sent nothing for the guard's timeout."""


def content_disposition(filename: str) -> str:
    """An ``inline`` Content-Disposition for ``filename`` that any name survives: an ASCII ``filename`` fallback
    and the exact name as RFC 5987 ``filename*`` (a non-Latin-1 name answered 500 before, issue #31)."""
    ascii_name = filename.encode("ascii", "replace").decode("ascii").replace("?", "_").replace('"', "_")
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def service_predictor(settings: ServiceSettings):
    if settings.model_dir is None:
        return shipped_predictor()

    return load_predictor(settings.model_dir)


def _metrics(predictor) -> dict:
    """Headline metrics of the model's artifact set (``metrics.json`` beside the model folder), if any."""
    path = predictor.model_dir.parent / "metrics.json" if predictor.model_dir is not None else None
    if path is None or not path.is_file():
        return {}
    d = json.loads(path.read_text())
    return {k: v.get("overall", v) for k, v in d.items() if isinstance(v, dict) and "overall" in v}


def model_description(predictor) -> dict:
    """What ``GET /v1/model`` answers."""
    cfg = predictor.cfg
    return {"model_sha256": model_sha256(predictor), "backbone": cfg.backbone, "input_size": cfg.input_size,
            "geometry": asdict(cfg.geometry), "tta": predictor.tta, "ensemble_members": len(predictor.members),
            "stages": list(cfg.stages.names), "interval_levels": list(LEVELS),
            "intervals_calibrated": predictor.conformal is not None,
            "outlier_check": predictor.outlier_check is not None, "outlier_check_problem": outlier_check_problem(),
            "sites": available_sites(), "metrics": _metrics(predictor),
            "row_columns": row_columns(cfg.stages.names)}


def _png_base64(rgb) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def create_app(settings: ServiceSettings = ServiceSettings()) -> FastAPI:
    """The FastAPI application; the model is loaded (and its network traced) at start-up."""
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        predictor = service_predictor(settings)
        predictor.fast_network()  # trace once before the first request
        state["predictor"] = predictor
        state["model"] = model_description(predictor)
        state["pool"] = ThreadPoolExecutor(settings.workers, thread_name_prefix="assess")
        try:
            yield
        finally:
            state["pool"].shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="Bone age assessment", version=API_VERSION, lifespan=lifespan,
                  description="Pediatric bone age from a left-hand radiograph (decision support only).")
    app.add_middleware(UploadGuard, max_bytes=settings.max_upload_bytes, max_pending=settings.max_pending,
                       paths=(f"/{API_VERSION}/assessments",))

    def problem(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(ImageLoadError)
    async def image_error(request: Request, exc: ImageLoadError):
        return problem(422, str(exc))

    @app.exception_handler(AssessmentInputError)
    async def input_error(request: Request, exc: AssessmentInputError):
        return problem(422, str(exc))

    @app.exception_handler(SiteProfileError)
    async def site_error(request: Request, exc: SiteProfileError):
        return problem(422, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return problem(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the model is loaded; how many assessments are running or queued."""
        return {"status": "ok", "model_sha256": state["model"]["model_sha256"],
                "workers": settings.workers, "max_pending": settings.max_pending}

    @app.get(f"/{API_VERSION}/model")
    async def model() -> dict:
        """The model in use: sha256 fingerprint, metrics on the test sets, input geometry, the answer's keys."""
        return state["model"]

    @app.post(f"/{API_VERSION}/assessments",
              responses={200: {"content": {"application/json": {}, "application/pdf": {}},
                               "description": "The assessment row (JSON), or the report (Accept: application/pdf)"},
                         413: {"description": "Upload too large"}, 422: {"description": "Unusable input"},
                         503: {"description": "Too many requests queued; retry"}})
    async def create_assessment(
            request: Request,
            image: Annotated[UploadFile, File(description="the radiograph: PNG, JPEG or DICOM")],
            sex: Annotated[str | None, Form(description="M or F; a DICOM's PatientSex when left out")] = None,
            chronological_age_months: Annotated[str | None, Form(
                description="months; a DICOM's birth and study dates (or PatientAge) when left out")] = None,
            site: Annotated[str | None, Form(description="a site profile name (GET /v1/model lists them)")] = None,
            patient_id: Annotated[str | None, Form(description="patient id; a DICOM's PatientID when left out")] = None,
            birth_date: Annotated[str | None, Form(description="YYYY-MM-DD; with study_date gives the age")] = None,
            study_date: Annotated[str | None, Form(description="YYYY-MM-DD")] = None,
            height_cm: Annotated[str | None, Form(description="the child's height: Bayley-Pinneau adult height")] = None,
            father_height_cm: Annotated[str | None, Form(description="with mother_height_cm: target height")] = None,
            mother_height_cm: Annotated[str | None, Form(description="cm")] = None,
            heatmap: Annotated[bool, Query(description="add heatmap_png: base64 PNG of the Grad-CAM overlay")] = False,
    ):
        """Assess one radiograph: the row of ``pipelines.predict`` as JSON, or the PDF report."""
        predictor = state["predictor"]
        if site and site not in (names := available_sites()):  # names only: no paths from the network
            return problem(422, f"unknown site profile {site!r}; available: {', '.join(names) or 'none'}")
        want_pdf = "application/pdf" in request.headers.get("accept", "")
        chrono = chronological_age_months if chronological_age_months not in (None, "") else None
        name = image.filename or "upload"
        clinical = {"patient_id": patient_id, "birth_date": birth_date, "study_date": study_date,
                    "height_cm": height_cm, "father_height_cm": father_height_cm, "mother_height_cm": mother_height_cm}
        clinical = clinical if any(v not in (None, "") for v in clinical.values()) else None

        def work():
            data = image.file.read()  # in the worker: the event loop never holds a whole upload
            a = assess(data, sex, chrono, site or None, name=name, predictor=predictor, upload=True, clinical=clinical)
            heat = gradcam(a, predictor) if (heatmap or want_pdf) else None
            if want_pdf:
                return render_report(a, heat)
            row = a.as_row()
            if heat is not None:
                row["heatmap_png"] = _png_base64(overlay(a.image, heat, 0.45))
            return row

        result = await asyncio.get_running_loop().run_in_executor(state["pool"], work)
        if want_pdf:
            return Response(result, media_type="application/pdf",
                            headers={"content-disposition": content_disposition(report_name(name))})
        return JSONResponse(result)

    @app.post(f"/{API_VERSION}/followups", responses={422: {"description": "Unusable input"}})
    async def create_followup(request: Request):
        """Follow patients across films: ``{"films": [rows of /v1/assessments]}`` (each with ``id``,
        ``patient_id``, ``boneage_pred``, ``chronological_age_months``, ``male``, optionally ``study_date``)
        -> ``{"followups": [one row per patient with two or more films], "retest_sd": months}``: the velocity
        with its 90 % interval from the model's test-retest SD (boneage.growth.followup)."""
        try:
            body = await request.json()
            films_in = body["films"]
            assert isinstance(films_in, list)
        except Exception:
            return problem(422, 'the body must be JSON {"films": [assessment rows]}')
        films, bad = [], []
        for i, f in enumerate(films_in):
            try:
                ca = f.get("chronological_age_months")
                films.append(Film(id=str(f.get("id", i)), patient_id=str(f.get("patient_id") or ""),
                                  bone_age_months=float(f["boneage_pred"]),
                                  chronological_age_months=None if ca in (None, "") else float(ca),
                                  male=parse_male(f.get("male")), study_date=parse_date(f.get("study_date"), "")[0]))
            except (KeyError, TypeError, ValueError, AttributeError):
                bad.append(f"film {i}: needs boneage_pred and a numeric chronological_age_months")
        if bad:
            return problem(422, "; ".join(bad))
        try:
            sd = measured_retest_sd()
        except (OSError, ValueError) as exc:
            return problem(503, f"the model's test-retest precision is unavailable: {exc}")
        series = [follow_up(g, sd).as_row() for g in group_films(films).values() if len(g) >= 2]
        return JSONResponse({"followups": series, "retest_sd": sd})

    return app


__all__ = ["UploadGuard", "ServiceSettings", "create_app", "model_description", "service_predictor"]
