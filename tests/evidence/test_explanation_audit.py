"""The explanation audit (boneage/evidence/explanation_audit.py): shares on the hand, deletion / insertion curves against
random, the cascading randomisation on a copy, the precompute option, and the dashboard page."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from boneage.evidence import explain
from boneage.geometry.hand import hand_mask
from boneage.evidence import explanation_audit as ea
from boneage.store.artifacts import ArtifactStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    from boneage.inference.predictor import load_predictor

    return load_predictor(REPO / "artifacts" / "model").model


@pytest.fixture(scope="module")
def radiograph(data_dir):
    from boneage.training.image_cache import load_case_image
    from boneage.geometry.preprocess import to_uint8

    return to_uint8(load_case_image(data_dir / "train", "1378"))


def _fingers_up_mask() -> np.ndarray:
    """A synthetic hand: four separate fingers on a palm on a forearm."""
    m = np.zeros((100, 100), bool)
    for x0 in (30, 40, 50, 60):
        m[10:45, x0:x0 + 6] = True  # fingers with gaps between them
    m[45:75, 28:68] = True  # palm
    m[75:100, 38:60] = True  # wrist and forearm
    return m


def test_share_on_hand_is_one_on_the_mask_and_zero_off_it():
    mask = _fingers_up_mask()
    on = mask.astype(np.float32) * 0.7
    off = (~mask).astype(np.float32)
    assert ea.attribution_shares(on, mask=mask).hand == pytest.approx(1.0)
    assert ea.attribution_shares(off, mask=mask).hand == pytest.approx(0.0)
    assert ea.attribution_shares(off, mask=mask).off_hand
    assert ea.attribution_shares(np.zeros((100, 100)), mask=mask).hand == 0.0  # an empty map points nowhere
    s = ea.attribution_shares(on, mask=mask)
    assert s.hand_area == pytest.approx(mask.mean())
    # the three bands split the hand's mass and area between them
    assert s.fingers + s.metacarpals + s.wrist == pytest.approx(1.0)
    assert s.fingers_area + s.metacarpals_area + s.wrist_area == pytest.approx(mask.mean())
    wrist_only = np.zeros((100, 100), np.float32)
    wrist_only[90:100, 40:55] = 1
    assert ea.attribution_shares(wrist_only, mask=mask).wrist == pytest.approx(1.0)
    with pytest.raises(ValueError, match="image"):
        ea.attribution_shares(on)
    failed = ea.attribution_shares(off, mask=np.ones((100, 100), bool))  # a mask that took the whole film
    assert not failed.mask_ok and not failed.off_hand
    assert "could not be located" in ea.describe_shares(failed)


def test_regions_are_refused_for_a_hand_that_does_not_stand_fingers_up():
    mask = _fingers_up_mask()
    assert ea.hand_regions(mask) is not None
    assert ea.hand_regions(mask[::-1]) is None  # upside down: the top band is one piece
    s = ea.attribution_shares(np.ones((100, 100)), mask=mask[::-1])
    assert np.isnan(s.wrist) and s.hand == pytest.approx(mask.mean())


def test_shares_of_a_real_radiograph_use_the_library_hand_mask(radiograph):
    mask = hand_mask(radiograph)
    assert ea.attribution_shares(mask.astype(float), radiograph).hand == pytest.approx(1.0)
    assert "mostly off the hand" in ea.describe_shares(ea.attribution_shares((~mask).astype(float), radiograph))


def test_an_informative_order_beats_random_on_a_toy_model_with_a_known_answer():
    """f(x) = 100 x mean of a 20x20 patch: deleting the patch first moves the output at once, random deletion
    only gradually; inserting it first restores the output at once."""
    patch = (slice(40, 60), slice(30, 50))

    def forward(images, male):
        return 100 * images[:, patch[0], patch[1]].mean(axis=(1, 2)).astype(np.float64)

    rng = np.random.default_rng(0)
    image = rng.uniform(0.5, 1.0, (100, 100)).astype(np.float32)
    informative = np.zeros((100, 100))
    informative[patch] = 1
    orders = {"map": [ea.pixel_order(informative, rng)], "random": [ea.random_order(image.size, rng) for _ in range(3)]}
    f_x, res = ea.perturbation_curves(forward, image, False, orders)
    fr = ea.FRACTIONS
    assert f_x == pytest.approx(forward(image[None], False)[0])
    dele, ins = res["map"]
    # the patch is 4 % of the image: at 5 % deleted the output is the baseline's (0), fully revealed on insertion
    k = list(fr).index(0.05)
    assert dele[0, k] == pytest.approx(0, abs=1e-6) and ins[0, k] == pytest.approx(f_x, rel=1e-5)
    rnd_del = np.mean([ea.curve_area(c, f_x, fr) for c in res["random"][0]])
    rnd_ins = np.mean([ea.curve_area(c, f_x, fr) for c in res["random"][1]])
    assert ea.curve_area(dele[0], f_x, fr) > rnd_del + 20
    assert ea.curve_area(ins[0], f_x, fr) < rnd_ins - 20
    # end points shared by every order: the image itself and the full baseline
    assert all(r[0][:, 0].tolist() == [f_x] * len(r[0]) for r in res.values())


def test_curve_area_is_the_mean_absolute_change():
    assert ea.curve_area([5, 7, 9], 5, [0, 0.5, 1]) == pytest.approx(2.0)  # |0|, |2|, |4| -> trapezoid 2
    assert ea.curve_area([5, 3], 5, [0, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="fractions"):
        ea.perturbation_curves(lambda x, m: np.zeros(len(x)), np.zeros((4, 4)), False, {}, (0.1, 1.0))


def test_deletion_on_a_real_radiograph_with_the_real_model(model, radiograph):
    forward = ea.explained_forward(model)
    # the traced forward is the very function the maps explain
    with torch.no_grad():
        eager = float(explain._Explained(model)(explain._as_input(radiograph), torch.tensor([0])))
    assert forward(radiograph[None].astype(np.float32) / 255, False)[0] == pytest.approx(eager, abs=0.05)
    heat = explain.attribute(model, radiograph, False, "gradcam")
    rng = np.random.default_rng(0)
    f_x, res = ea.perturbation_curves(forward, radiograph, False, {"gradcam": [ea.pixel_order(heat, rng)]})
    change = np.abs(res["gradcam"][0][0] - f_x)
    from scipy.stats import spearmanr

    assert spearmanr(ea.FRACTIONS, change).statistic > 0.6, change  # monotone-ish: more removed, more change
    assert change[-1] > change[1] and change[-1] > 5  # a blank image is read very differently


def test_randomisation_changes_a_copy_top_down_and_never_the_shared_model(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps, half = ea.randomization_steps(model)
    assert [s for s, _ in steps][:3] == ["heads", "head conv", "stage 7"] and steps[-1][0] == "stem"
    assert steps[half][0] == "stage 5"  # lite0: blocks 8-15 of 16 randomised from that step on
    seen = []
    for k, (label, net) in enumerate(ea.cascading_randomization(model, seed=0)):
        assert net is not model
        state = net.state_dict()
        done = [p for _, ps in steps[:k + 1] for p in ps]
        for name, v in state.items():
            if not torch.is_floating_point(v) or v.numel() < 2:
                continue
            changed = not torch.equal(v, before[name])
            assert changed == ea._matches(name, done), (label, name)
        seen.append(label)
        if k == 1:
            break
    assert seen == ["heads", "head conv"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"shared model changed: {k}"


def test_rank_correlation_of_constant_maps_is_zero():
    a = np.arange(16.0).reshape(4, 4)
    assert ea.rank_correlation(a, a) == pytest.approx(1.0)
    assert ea.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert ea.rank_correlation(a, np.zeros((4, 4))) == 0.0


def test_default_method_prefers_passing_sanity_then_faithfulness_then_share():
    def entry(label, passes, dele, ins, share):
        return {"label": label, "sanity": {"passes": passes, "rho_top_half": 0.1 if passes else 0.8},
                "beats_random_deletion_all_sets": dele, "beats_random_insertion_all_sets": ins,
                "sets": {"all": {"share_on_hand": {"median": share}}}}

    methods = {"a": entry("A", False, True, True, 0.9), "b": entry("B", True, True, False, 0.3),
               "c": entry("C", True, True, False, 0.5), "d": entry("D", True, False, True, 0.95)}
    best, why = ea.choose_default_method(methods)
    assert best == "c" and "B" in why and "No method meets every check" in why


def test_precompute_explanations_writes_json_and_manifest(tmp_path, data_dir, monkeypatch):
    import shutil

    import pipelines.explanation_audit as pea
    from pipelines import precompute

    art = tmp_path / "artifacts"
    (art / "model").mkdir(parents=True)
    for f in ("model.pt", "config.json"):
        shutil.copy(REPO / "artifacts" / "model" / f, art / "model" / f)
    shutil.copy(REPO / "artifacts" / "splits.csv", art / "splits.csv")
    # two cheap methods keep the test at seconds; the full run audits the page's four
    monkeypatch.setattr(pea, "AuditConfig", functools.partial(ea.AuditConfig, methods=("gradcam", "saliency"),
                                                              n_boot=200))
    rc = precompute.main(["--only", "explanations", "--max-cases", "2", "--artifacts", str(art),
                          "--data-dir", str(data_dir)])
    assert rc == 0
    audit = json.loads((art / ea.AUDIT_FILE).read_text())
    assert audit["sets"] == {"test": {"n_cases": 2}, "official_test": {"n_cases": 2}}
    assert audit["default_method"]["method"] in ("gradcam", "saliency") and audit["default_method"]["why"]
    for m in ("gradcam", "saliency"):
        e = audit["methods"][m]
        assert len(e["sanity"]["median_rho"]) == len(audit["sanity_steps"]) == 10
        assert 0 <= e["sets"]["all"]["share_on_hand"]["median"] <= 1
        assert len(e["sets"]["test"]["deletion"]["difference"]["ci"]) == 2
    assert len(audit["curves"]["test"]["random"]["deletion"]) == len(audit["curves"]["fractions"])
    assert isinstance(audit["verdict"]["relies_on_context"], bool) and audit["verdict"]["text"]
    import pandas as pd

    cases = pd.read_parquet(art / ea.CASES_FILE)
    assert len(cases) == 8 and set(cases["method"]) == {"gradcam", "saliency"}
    listed = {f["path"] for f in json.loads((art / "manifest.json").read_text())["files"]}
    assert {ea.AUDIT_FILE, ea.CASES_FILE} <= listed


STORE = ArtifactStore.default()


@pytest.mark.skipif(not STORE.exists(ea.AUDIT_FILE), reason="no explanation audit in the artifact set")
def test_audit_page_renders_the_numbers_and_the_verdict(monkeypatch):
    from tests.dashboard.app_driver import open_page

    monkeypatch.delenv("BONEAGE_DATA", raising=False)  # the page needs only the artifacts
    audit = STORE.json(ea.AUDIT_FILE)
    at = open_page("views/9_Explanation_audit.py")
    assert not at.exception, [e.value for e in at.exception]
    body = "\n".join(str(x.value) for x in (*at.markdown, *at.warning, *at.success, *at.caption, *at.error))
    assert audit["verdict"]["text"] in body
    assert audit["methods"][audit["default_method"]["method"]]["label"] in body
    assert len(at.get("plotly_chart")) >= 4  # shares, groups, deletion, insertion, sanity
    table = at.dataframe[0].value
    assert len(table) == len(audit["methods"])
    first = next(iter(audit["methods"].values()))
    assert table["sanity rho (top half random)"].iloc[0] == pytest.approx(first["sanity"]["rho_top_half"])


def test_error_browser_and_explain_state_the_share_on_the_hand_of_the_shown_map(monkeypatch, data_dir):
    from tests.dashboard.app_driver import open_page

    monkeypatch.setenv("BONEAGE_DATA", str(data_dir))
    case = ("4361", "official_test")
    for page in ("views/2_Error_browser.py", "views/3_Explain.py"):
        at = open_page(page, {"case_id": case[0], "case_split": case[1]})
        assert not at.exception, [e.value for e in at.exception]
        notes = [str(x.value) for x in (*at.caption, *at.warning) if "on the hand" in str(x.value)
                 or "could not be located" in str(x.value)]
        assert notes, page
        assert any(n.startswith("Grad-CAM") for n in notes), notes


def test_audit_images_are_prepared_in_the_audited_models_geometry(data_dir):
    """A framing model is audited on the framed images its network reads, not on the whole film."""
    from boneage.geometry.framing import Geometry
    from boneage.io.imaging import read_radiograph
    from boneage.geometry.preprocess import prepare, to_uint8
    from pipelines.explanation_audit import load_audit_cases

    internal = pd.DataFrame({"id": ["1377"], "male": [True], "boneage": [120.0]})
    official = pd.DataFrame({"id": ["4365"], "male": [False], "boneage": [float("nan")]})
    framed = Geometry(framing="hand-upright")
    cases, failed = load_audit_cases(data_dir, internal, official, framed, log=lambda *_: None)
    assert not failed and [c.set for c in cases] == ["test", "official_test"]
    want = to_uint8(prepare(read_radiograph(data_dir / "test" / "4365.png"), framed).image)
    np.testing.assert_array_equal(cases[1].image, want)
    plain, _ = load_audit_cases(data_dir, internal, official, Geometry(), log=lambda *_: None)
    assert not np.array_equal(plain[1].image, cases[1].image)
