"""The DICOM node's logic: a Storage SCP that reads every hand radiograph it receives and sends the reading
back to the PACS as a Secondary Capture and a Structured Report (the command is ``boneage dicom-node``).

It accepts CR, DX and secondary-capture images (C-STORE; C-ECHO answers too). Each received image is checked
at once (readable pixels, a hand radiograph by the input gate and its header, a sex in the header or
``--default-sex``): what cannot be assessed gets a failure status (0xC000, "cannot understand", the reason in
the status's ErrorComment and in full in the log) and the node keeps serving. Accepted images are assessed in
one worker thread (the queue holds ``--queue-size`` images; a full queue answers 0xA700 "out of resources",
which PACS retry) and the results are sent with C-STORE to the destination AE: a Secondary Capture with the
reading and the Grad-CAM map burnt in under a "decision support" banner, and a TID 1500 SR with the bone age,
interval bounds and stage as coded measurements (see :mod:`boneage.clinic.dicom_results`). A failure while assessing
or sending is logged with the image's SOP Instance UID.

The chronological age (for delayed / normal / advanced) comes from PatientAge or PatientBirthDate and the
study date; without it the reading has no maturity call.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import socket
import threading
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt

from boneage.clinic.dicom_results import (MANUFACTURER, covers_whole_image, display_radiograph, secondary_capture,
                                          structured_report)
from boneage.clinic.report import gradcam
from boneage.inference.assess import assess, outlier_check_problem, shipped_predictor, with_site
from boneage.inference.predictor import load_predictor
from boneage.io.dicom_patient import patient_info
from boneage.io.imaging import ImageLoadError, decode_image_bytes
from boneage.io.input_gate import gate_decoded

log = logging.getLogger("boneage.dicom_node")

# Transfer syntaxes the node decodes (pydicom + the pylibjpeg plugins in requirements.txt); a sender with
# another one converts to one of these during association negotiation.
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
                     JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless]
# Storage SOP classes that can hold a hand radiograph (CR, DX for presentation / processing, secondary captures).
ACCEPTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
}
SUCCESS, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700


@dataclass(frozen=True)
class Destination:
    """Where the results go: the receiving AE (usually the PACS that sent the image)."""
    ae_title: str
    host: str
    port: int


@dataclass
class NodeConfig:
    """How the node runs. ``default_sex``: True (male) / False (female) for images whose header has no
    PatientSex, None to refuse them. ``site``: a site profile applied to every reading (name in artifacts/sites
    or a path). ``outlier_check``: mark images unlike the training radiographs (shipped model only).
    ``allowed_callers``: the calling AE titles whose associations are accepted (empty: any caller); others are
    rejected during association negotiation, before any image is received."""
    destination: Destination
    ae_title: str = "BONEAGE"
    host: str = "127.0.0.1"
    port: int = 11112
    default_sex: bool | None = None
    site: str | None = None
    model_dir: str | None = None
    outlier_check: bool = True
    queue_size: int = 8
    sc_series_number: int = 9901
    sr_series_number: int = 9902
    allowed_callers: tuple[str, ...] = ()


@dataclass
class Job:
    """An accepted image waiting to be assessed: the file as received (assessed by :func:`boneage.inference.assess.assess`,
    like every other door), its header, the radiograph as the Secondary Capture shows it (small), and the sex
    to use when the header has none (None: the header's)."""
    data: bytes
    name: str
    header: Dataset
    display: np.ndarray
    sex: str | None = None


@dataclass
class NodeStats:
    """Counts since the node started (logged when it stops)."""
    received: int = 0
    refused: int = 0
    assessed: int = 0
    sent: int = 0
    failed: int = 0


class Refused(Exception):
    """An image the node cannot assess; the message says why (logged, and sent back as ErrorComment)."""


# -- the node ----------------------------------------------------------------------------------------------
class BoneAgeNode:
    """The Storage SCP with its assessment worker. ``start()`` returns once it listens; ``stop()`` ends both."""

    def __init__(self, config: NodeConfig, predictor):
        self.config = config
        self.predictor = predictor
        self.stats = NodeStats()
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, config.queue_size))
        self.ae = AE(ae_title=config.ae_title)
        for uid in ACCEPTED_SOP_CLASSES:
            self.ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        self.ae.add_supported_context("1.2.840.10008.1.1")  # Verification (C-ECHO)
        # A-ASSOCIATE-RJ "called AE title not recognised" for an association addressed to another AE (issue #31:
        # the node answered whatever it was called)
        self.ae.require_called_aet = True
        if config.allowed_callers:  # A-ASSOCIATE-RJ "calling AE title not recognised" for any other caller
            self.ae.require_calling_aet = list(config.allowed_callers)
        self._handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: SUCCESS)]
        self._server = None
        self._worker = threading.Thread(target=self._work, name="boneage-assess", daemon=True)
        self._lock = threading.Lock()
        self._accepted: set[str] = set()  # SOP instances accepted since the start (one result each)

    # -- lifecycle
    def start(self) -> None:
        self._worker.start()
        self._server = self.ae.start_server((self.config.host, self.config.port), block=False,
                                            evt_handlers=self._handlers)
        log.info("DICOM node %s listening on %s:%d; results go to %s@%s:%d", self.config.ae_title, self.config.host,
                 self.config.port, self.config.destination.ae_title, self.config.destination.host,
                 self.config.destination.port)
        log.info("accepting associations from %s", ", ".join(self.config.allowed_callers) if self.config.allowed_callers
                 else "any calling AE title (--allow-aet limits them)")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        self.jobs.put(None)
        self._worker.join(timeout=60)

    # -- C-STORE: quick checks, then queue
    def _on_store(self, event) -> Dataset | int:
        with self._lock:
            self.stats.received += 1
        calling = str(getattr(event.assoc.requestor, "ae_title", "") or "").strip()
        uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "?")
        name = f"image {uid} from {calling or '?'}"
        try:
            job = self.check(event.encoded_dataset(), name)
        except Exception as exc:  # Refused, or anything unforeseen: a failure status, and the node keeps serving
            reason = str(exc) if isinstance(exc, Refused) else f"{name}: not assessed ({type(exc).__name__}: {exc})"
            with self._lock:
                self.stats.refused += 1
            log.warning("refused %s", reason)
            return _failure(CANNOT_UNDERSTAND, reason.removeprefix(f"{name}: "))
        sop = str(job.header.get("SOPInstanceUID", "") or uid)
        with self._lock:  # a PACS retry of an image already accepted: Success, and no second result
            if sop in self._accepted:
                log.info("%s was already accepted; not assessed again", sop)
                return SUCCESS
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            log.warning("queue full (%d images): %s answered 'out of resources' (the sender retries)",
                        self.jobs.maxsize, uid)
            return _failure(OUT_OF_RESOURCES, "bone-age node busy; retry later")
        with self._lock:
            self._accepted.add(sop)
        log.info("accepted %s%s", uid, f" (sex {job.sex} by --default-sex)" if job.sex else "")
        return SUCCESS

    def check(self, data: bytes, name: str) -> Job:
        """Decode and judge one received DICOM file (its bytes): a :class:`Job` when it can be assessed, else
        :class:`Refused` with the reason. Pixel decoding and the input gate are the library's
        (:func:`boneage.io.imaging.decode_image_bytes`, :func:`boneage.io.input_gate.gate_decoded`), so the node refuses
        what every other door refuses."""
        try:
            decoded = decode_image_bytes(data, name)
        except ImageLoadError as exc:
            raise Refused(str(exc)) from None
        except Exception as exc:  # an odd file must never take the node down
            raise Refused(f"{name}: cannot be read ({type(exc).__name__}: {exc})") from None
        header = decoded.dicom if decoded.dicom is not None else Dataset()
        if str(header.get("Manufacturer", "") or "") == MANUFACTURER:
            raise Refused(f"{name}: this is one of the node's own results (a bone-age secondary capture), "
                          "not a radiograph; not assessed again.")
        try:
            gated = gate_decoded(decoded)
        except ImageLoadError as exc:  # NotARadiographError: another modality or body part, blank, noise ...
            raise Refused(str(exc)) from None
        sex = None
        if patient_info(header).male is None:  # the header's sex is read by assess(), like at every door
            if self.config.default_sex is None:
                value = str(header.get("PatientSex", "") or "").strip() or "empty"
                raise Refused(f"{name}: no patient sex in the header (PatientSex {value}) and none configured; the "
                              "model needs it. Fill PatientSex (M/F) or start the node with --default-sex.")
            sex = "M" if self.config.default_sex else "F"
        return Job(data, name, header, display_radiograph(gated.pixels), sex)

    # -- worker: assess, build, send
    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                self.process(job)
            except Exception as exc:  # logged; the node keeps serving
                with self._lock:
                    self.stats.failed += 1
                log.error("failed %s: %s: %s", getattr(job.header, "SOPInstanceUID", "?"), type(exc).__name__, exc)
            finally:
                self.jobs.task_done()

    def process(self, job: Job) -> tuple[Dataset, Dataset]:
        """Assess one accepted image and send its Secondary Capture and SR to the destination."""
        a, heat = assess_job(self.predictor, job)
        with self._lock:
            self.stats.assessed += 1
        sc = secondary_capture(job.header, a, job.display, heat, self.config.sc_series_number,
                               whole_image=covers_whole_image(self.predictor.cfg.geometry))
        sr = structured_report(job.header, a, self.config.sr_series_number)
        send(self.config.destination, [sc, sr], self.config.ae_title)
        with self._lock:
            self.stats.sent += 1
        log.info("sent bone age %.1f months for %s to %s (SC %s, SR %s)", a.boneage_months,
                 job.header.get("SOPInstanceUID", "?"), self.config.destination.ae_title, sc.SOPInstanceUID,
                 sr.SOPInstanceUID)
        return sc, sr


def _failure(status: int, comment: str) -> Dataset:
    """A C-STORE status with its reason as ErrorComment (the start of it: an LO holds 64 characters)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]  # the log has the whole reason
    return ds


def assess_job(predictor, job: Job):
    """(Assessment, Grad-CAM) of one accepted image, by the library's one assessment function: sex and
    chronological age from the header (:mod:`boneage.io.dicom_patient`), or the node's default sex."""

    a = assess(job.data, job.sex, name=job.name, predictor=predictor)
    if job.sex is not None:
        a = dataclasses.replace(a, sex_source="node default (--default-sex)")
    return a, gradcam(a, predictor)


def send(destination: Destination, datasets: list[Dataset], calling_ae: str = "BONEAGE", timeout: float = 30) -> None:
    """C-STORE ``datasets`` to ``destination`` in one association; raises RuntimeError naming what failed."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"could not associate with {destination.ae_title}@{destination.host}:{destination.port} "
                           "(is it running, and does it know this node's AE title?)")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise RuntimeError(f"{destination.ae_title} refused {ds.SOPClassUID.name} {ds.SOPInstanceUID} "
                                   f"(status {'none' if code is None else hex(code)})")
    finally:
        assoc.release()


def port_problem(host: str, port: int) -> str:
    """Why the node cannot listen on ``host:port`` ('' when it can)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host."
    return ""


def load_node_predictor(config: NodeConfig):
    """The predictor the node reads with: the shipped model with its "unlike the training data" check
    (:func:`boneage.inference.assess.shipped_predictor`) or ``model_dir`` (without that check), and the site profile."""
    if config.model_dir is None and config.outlier_check:
        predictor = shipped_predictor()
        if problem := outlier_check_problem():
            log.warning(problem)
    else:
        predictor = load_predictor(config.model_dir)
    return with_site(predictor, config.site)
