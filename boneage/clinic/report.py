"""The printable report: one A4 page per radiograph, as PDF (fpdf2). One renderer for every door: the
dashboard's Predict page (download button), ``pipelines.predict --report-dir`` and the HTTP service
(``Accept: application/pdf``).

A page holds: patient id and sex, the study and birth dates when the DICOM header gives them, the report
date, the chronological age when known (and where it came from), the model input beside its Grad-CAM map,
the bone age with its 90 % prediction interval, the developmental stage, the maturity status with its rule,
the bone age SDS against the reference it names with its status (delayed / normal / advanced /
indeterminate), the reference chart (mean and +/-2 SD band over age) with this child's point(s), the
Bayley-Pinneau adult height and the mid-parental target when heights were given, the follow-up velocity when
earlier films of the patient are passed (``series``), the "unlike the training data" note, the input notes (inverted negative, framing, decoder notes), the model
fingerprint and site profile, and the decision-support disclaimer.

The page uses the PDF core font (Helvetica, Latin-1): text outside Latin-1 (a file name in another script)
is printed with '?' for the characters it cannot show, never dropped silently as a whole.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from boneage.config import write_atomic
from boneage.evidence.explain import attribute
from boneage.evidence.render import overlay
from boneage.inference.assess import DECISION_SUPPORT, Assessment, shipped_predictor
from boneage.inference.predictor import BoneAgePredictor
from boneage.growth.followup import FollowUp
from boneage.growth.reference import load_reference

TITLE = "Bone age assessment"
_LATIN1_SUBSTITUTES = {"\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2264": "<=", "\u2265": ">=", "\u2018": "'",
                       "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...", "\u00a0": " "}


def gradcam(a: Assessment, predictor: BoneAgePredictor | None = None) -> np.ndarray:
    """The Grad-CAM map ([0, 1], base size) of an assessment's model input: where the network looked (the
    map the Predict page and the report show). Serialised with other explanations (EAGER_LOCK)."""
    return attribute((predictor or shipped_predictor()).model, a.image, a.male, "gradcam")


def latin1(text: object) -> str:
    """``text`` as the core PDF font can print it (typographic dashes and quotes mapped, the rest '?')."""
    s = "".join(_LATIN1_SUBSTITUTES.get(c, c) for c in str(text))
    return s.encode("latin-1", "replace").decode("latin-1")


def _age_text(months: float) -> str:
    years, rest = divmod(months, 12)
    return f"{months:.1f} months ({int(years)} y {rest:.0f} m)"


def _ood_text(a: Assessment) -> str:
    if a.unlike_training_data is None:
        return "Not checked: the 'unlike the training data' check was not available for this model."
    if a.unlike_training_data:
        return (f"CAUTION: the image looks unlike the training radiographs (outlier score {a.outlier_score:.2f} > "
                f"{a.outlier_threshold:.2f}); read the estimate with extra caution.")
    return (f"Within the training data (outlier score {a.outlier_score:.2f}, flagged above "
            f"{a.outlier_threshold:.2f}).")


def _panel(a: Assessment, heatmap: np.ndarray | None) -> Image.Image:
    """The model input and its Grad-CAM overlay side by side (RGB), upscaled for print."""

    img = np.asarray(a.image, np.uint8)
    tiles = [np.repeat(img[..., None], 3, axis=2)]
    if heatmap is not None:
        tiles.append(overlay(img, heatmap, 0.45))
    gap = np.full((img.shape[0], 4, 3), 255, np.uint8)
    strip = np.hstack([tiles[0], gap, tiles[1]]) if len(tiles) == 2 else tiles[0]
    return Image.fromarray(strip).resize((strip.shape[1] * 4, strip.shape[0] * 4), Image.Resampling.NEAREST)


def reference_chart(a: Assessment, series: FollowUp | None = None, size: tuple[int, int] = (520, 440)) -> Image.Image:
    """The reference chart as a picture: the reference's mean bone age and its +/-2 SD band over chronological
    age for the child's sex, and the child's reading(s) as points (the series' films when given, else this
    film with its 90 % interval as a bar)."""
    ref = load_reference()
    band = ref.band(a.male)
    w, h = size
    left, right, top, bottom = 46, 12, 26, 34
    x_max = y_max = 228.0

    def xy(ca: float, ba: float) -> tuple[float, float]:
        return (left + (w - left - right) * ca / x_max, h - bottom - (h - top - bottom) * min(ba, y_max) / y_max)

    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    ca = band["chronological_age_months"].to_numpy()
    poly = [xy(c, v) for c, v in zip(ca, band["upper"])] + [xy(c, v) for c, v in zip(ca[::-1], band["lower"][::-1])]
    d.polygon(poly, fill=(222, 226, 235))
    d.line([xy(c, v) for c, v in zip(ca, band["mean"])], fill=(90, 90, 110), width=2)
    for t in range(0, 229, 24):  # years on both axes
        d.line([xy(t, 0), (xy(t, 0)[0], xy(t, 0)[1] + 4)], fill="black")
        d.text((xy(t, 0)[0] - 6, h - bottom + 6), f"{t // 12}", fill="black")
        d.line([(left - 4, xy(0, t)[1]), (left, xy(0, t)[1])], fill="black")
        d.text((left - 22, xy(0, t)[1] - 6), f"{t // 12}", fill="black")
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    d.text((left, 6), latin1(f"Bone age (y) vs age (y), {'boys' if a.male else 'girls'}: {ref.name}, mean +/- 2 SD"),
           fill="black")
    films = ([(f.chronological_age_months, f.bone_age_months, None) for f in series.films
              if f.chronological_age_months is not None] if series is not None else [])
    if not films and a.chronological_age_months is not None:
        films = [(a.chronological_age_months, a.boneage_months, a.intervals.get("90"))]
    pts = [xy(c, b) for c, b, _ in films]
    if len(pts) > 1:
        d.line(pts, fill=(200, 40, 40), width=4)
    for (c, b, iv), (px, py) in zip(films, pts):
        if iv is not None:
            d.line([xy(c, iv[0]), xy(c, iv[1])], fill=(200, 40, 40), width=4)
        d.ellipse([px - 9, py - 9, px + 9, py + 9], fill=(200, 40, 40))
    return img


def _page(pdf, a: Assessment, heatmap: np.ndarray | None, report_date: dt.date,
          series: FollowUp | None = None) -> None:
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def line(text: str, size: float = 10, style: str = "", h: float = 5.2) -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(width, h, latin1(text), align="L", new_x="LMARGIN", new_y="NEXT")

    def pair(label: str, value: str) -> None:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(48, 5.6, latin1(label))
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(width - 48, 5.6, latin1(value), align="L", new_x="LMARGIN", new_y="NEXT")

    line(TITLE, 16, "B", 8)
    # the file name only: a path would print the server's folders (and perhaps a patient name) on the report
    line(f"Radiograph: {os.path.basename(str(a.id)) or a.id}", 9, "", 4.5)
    pdf.ln(2)
    p = a.patient
    pair("Patient ID", a.patient_id or "not given")
    pair("Sex", ("male" if a.male else "female") + ("" if a.sex_source == "given" else f" (from the {a.sex_source})"))
    if p.birth_date or a.clinical.birth_date:
        pair("Birth date", (a.clinical.birth_date or p.birth_date).isoformat())
    pair("Study date", a.study_date.isoformat() if a.study_date else "not given")
    pair("Report date", report_date.isoformat())
    if a.chronological_age_months is not None:
        src = "" if a.chronological_age_source == "given" else f" (from the {a.chronological_age_source})"
        pair("Chronological age", _age_text(a.chronological_age_months) + src)
    else:
        pair("Chronological age", "not given (no maturity status)")
    pdf.ln(2)

    panel = _panel(a, heatmap)
    img_w = min(width, 110.0)
    img_h = img_w * panel.height / panel.width
    y0 = pdf.get_y()
    pdf.image(panel, x=pdf.l_margin, w=img_w, h=img_h)
    if a.chronological_age_months is not None:  # the chart beside the images
        chart = reference_chart(a, series)
        chart_w = width - img_w - 4
        pdf.image(chart, x=pdf.l_margin + img_w + 4, y=y0, w=chart_w, h=chart_w * chart.height / chart.width)
    line("Model input (left) and Grad-CAM map of the regions that drove the estimate (right)"
         if heatmap is not None else "Model input", 8, "I", 4)
    pdf.ln(2)

    line(f"Bone age: {_age_text(a.boneage_months)}", 13, "B", 7)
    iv = a.intervals.get("90")
    pair("90 % prediction interval", f"{iv[0]:.1f} - {iv[1]:.1f} months" if iv else
         f"not available ({a.interval_problem or 'model not calibrated'})")
    pair("Stage", f"{a.stage} (probability {a.stage_probs[a.stage]:.0%})")
    if a.maturity is not None:
        pair("Maturity status", a.maturity_text())
        pair("Rule", a.maturity.rule)
    if a.sds is not None:
        pair("Bone age SDS", a.sds.text())
        if a.sds.rule:
            pair("SDS rule", a.sds.rule)
    if a.adult_height is not None:
        pair("Adult height", a.adult_height.text())
    th = a.target_height
    if th is not None:
        pair("Target height", f"{th.target_cm:.1f} cm (mid-parental, range {th.lower_cm:.1f}-{th.upper_cm:.1f} cm)"
             if th.target_cm is not None else f"not computed: {th.reason}")
    if series is not None and series.velocity is not None:
        dates = (f" {series.first_study_date} to {series.last_study_date}"
                 if series.first_study_date and series.last_study_date else "")
        pair("Follow-up", f"{len(series.films)} films{dates}: "
             f"bone age advanced {series.velocity:.2f} months per month of age (90% interval {series.lower_90:.2f}-"
             f"{series.upper_90:.2f}, test-retest SD {series.retest_sd:.1f} months)"
             + (f". {'; '.join(series.notes)}" if series.notes else ""))
    pair("Out-of-distribution", _ood_text(a))
    notes = [c for c in a.cautions() if "unlike the training" not in c and "from the DICOM" not in c]  # shown above
    if a.framing:
        notes.append(f"Framing: {a.framing}; mirroring: {a.mirrored}.")
    if notes:
        pair("Notes", "\n".join(notes))
    pdf.ln(1)
    pair("Model (sha256)", a.model_sha256 or "unknown")
    pair("Site profile", a.site_note or "none (the model as shipped)")
    pdf.ln(3)
    line(DECISION_SUPPORT, 9, "B", 4.8)


def render_report(assessments: Sequence[Assessment] | Assessment,
                  heatmaps: Sequence[np.ndarray | None] | np.ndarray | None = None,
                  report_date: dt.date | None = None, series: dict[str, FollowUp] | None = None) -> bytes:
    """The PDF (bytes) with one page per assessment. ``heatmaps``: one [0, 1] map per assessment (e.g.
    :func:`gradcam`) or None to print the model input alone. ``series``: patient id -> its follow-up
    (:mod:`boneage.growth.followup`), shown on the pages of that patient's films."""
    # deferred: fpdf is needed only when a PDF is written
    from fpdf import FPDF

    items = [assessments] if isinstance(assessments, Assessment) else list(assessments)
    heatmaps = [None] * len(items) if heatmaps is None else [heatmaps] if isinstance(heatmaps, np.ndarray) \
        else list(heatmaps)
    if len(heatmaps) != len(items):
        raise ValueError("render_report needs one heatmap (or None) per assessment")
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(False)  # one radiograph, one page
    pdf.set_margins(18, 16, 18)
    pdf.set_title(TITLE)
    pdf.set_creator("boneage")
    for a, h in zip(items, heatmaps):
        _page(pdf, a, h, report_date or dt.date.today(), (series or {}).get(a.patient_id) if a.patient_id else None)
    return bytes(pdf.output())


def write_report(path: str | os.PathLike, assessments, heatmaps=None) -> None:
    """:func:`render_report` written to ``path`` through a temporary file (never half a PDF)."""
    data = render_report(assessments, heatmaps)
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def report_name(case_id: str) -> str:
    """A safe file name for a case's report: ``<id>.pdf`` for a plain id (a path's file name, its image extension
    dropped). When odd characters had to be replaced, a short hash of the id is added (``x y`` ->
    ``x_y-1a2b3c4d.pdf``), so that different ids never share a report (issue #31: ``x y``, ``x_y`` and ``x?y``
    wrote one PDF)."""
    base = os.path.basename(str(case_id))
    base = base.rsplit(".", 1)[0] if base.lower().endswith((".png", ".jpg", ".jpeg", ".dcm", ".dicom")) else base
    stem = ("".join(c if c.isalnum() or c in "-_." else "_" for c in base).strip("._")) or "report"
    if stem != base:
        stem += "-" + hashlib.sha256(str(case_id).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return stem + ".pdf"


__all__ = ["gradcam", "latin1", "render_report", "report_name", "write_report"]
