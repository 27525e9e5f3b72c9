"""Ensembles: further networks listed in a model's config.json are averaged into every prediction.

The contract: the ensemble's age is the mean of its networks' ages (each with the same passes), the
features stay the primary network's (so neighbours and outlier scores do not depend on the members), a
missing member is an error that names the file (the intervals were calibrated on the whole ensemble), and
a member path cannot point outside the model folder.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from boneage.config import MODEL_DIR, ModelConfig, to_jsonable
from boneage.training.image_cache import load_images
from boneage.nn.forward import Member, run_network
from boneage.nn.model import BoneAgeNet
from boneage.inference.predictor import BoneAgePredictor, ModelNotFoundError
from boneage.store.manifest import member_dirs
from boneage.io.tables import read_cases

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images(data_dir):
    cases = read_cases(data_dir / "train.csv").cases.head(12)
    loaded = load_images(cases, data_dir / "train", 100, progress=False)
    assert len(loaded.images) == 12, loaded.failed
    return loaded.images, loaded.cases["male"].to_numpy().astype(bool)


def _write_member(folder, input_size: int = 128, seed: int = 0) -> None:
    """A second network of another input size (random head; enough to tell its predictions apart) that
    prepares its inputs as the shipped model does (a member must read the same pixels)."""
    torch.manual_seed(seed)
    shipped = json.loads((MODEL_DIR / "config.json").read_text())["model"]
    geometry = {k: shipped[k] for k in ("base_size", "fit", "framing", "framing_margin", "trim_bars", "phases",
                                        "laterality") if k in shipped}
    net = BoneAgeNet(ModelConfig(input_size=input_size, **geometry), pretrained=False).eval()
    folder.mkdir(parents=True)
    torch.save({"state_dict": net.state_dict()}, folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({"model": to_jsonable(net.cfg)}))


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    """The shipped primary network plus one extra member, as a model folder."""
    d = tmp_path_factory.mktemp("ens") / "model"
    d.mkdir()
    shutil.copy(MODEL_DIR / "model.pt", d / "model.pt")
    config = json.loads((MODEL_DIR / "config.json").read_text())
    config.setdefault("inference", {})["members"] = ["members/m1"]
    (d / "config.json").write_text(json.dumps(config))
    _write_member(d / "members" / "m1")
    return d


@pytest.mark.parametrize("tta", [False, True])
def test_ensemble_prediction_is_the_mean_of_its_networks(ensemble_dir, images, tta):
    imgs, male = images
    pred = BoneAgePredictor.from_dir(ensemble_dir, tta=tta)
    assert len(pred.members) == 1 and pred.members[0].cfg.input_size == 128
    both = pred.predict_preprocessed(imgs, male, return_features=True)
    alone = run_network(pred.model, imgs, male, return_features=True, tta=tta)
    member = run_network(pred.members[0], imgs, male, tta=tta)
    assert np.abs(member.age - alone.age).max() > 1.0  # the member really is a different network
    np.testing.assert_allclose(both.age, (alone.age + member.age) / 2, atol=0.05)
    np.testing.assert_allclose(both.scale, (alone.scale + member.scale) / 2, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(both.stage_prob, (alone.stage_prob + member.stage_prob) / 2, atol=1e-4)
    np.testing.assert_allclose(both.features, alone.features, rtol=1e-3, atol=1e-3)  # the primary's features


def test_ensemble_can_be_switched_off_for_comparisons(ensemble_dir, images):
    imgs, male = images
    pred = BoneAgePredictor.from_dir(ensemble_dir, tta=False)
    single = BoneAgePredictor.from_dir(ensemble_dir, tta=False, ensemble=False)
    assert single.members == () and pred.with_options(ensemble=False).members == ()
    assert pred.with_options(tta=True).members == pred.members
    np.testing.assert_allclose(single.predict_preprocessed(imgs, male).age,
                               run_network(pred.model, imgs, male).age, atol=0.05)


def test_explicit_members_match_run_network(ensemble_dir, images):
    imgs, male = images
    pred = BoneAgePredictor.from_dir(ensemble_dir, tta=False)
    eager = run_network(pred.model, imgs, male, members=[Member(pred.members[0])])
    np.testing.assert_allclose(pred.predict_preprocessed(imgs, male).age, eager.age, atol=0.05)


def test_missing_member_is_an_error_naming_the_file(ensemble_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(ensemble_dir, broken)
    (broken / "members" / "m1" / "model.pt").unlink()
    with pytest.raises(ModelNotFoundError, match=r"members/m1/model\.pt"):
        BoneAgePredictor.from_dir(broken)


def test_member_outside_the_model_folder_is_refused(ensemble_dir):
    config = json.loads((ensemble_dir / "config.json").read_text())
    config["inference"]["members"] = ["../../elsewhere"]
    with pytest.raises(ValueError, match="outside the model folder"):
        member_dirs(ensemble_dir, config)
    assert member_dirs(ensemble_dir, {"model": {}}) == []  # a single network lists none


def test_member_of_another_base_geometry_is_refused(ensemble_dir, tmp_path):
    odd = tmp_path / "model"
    shutil.copytree(ensemble_dir, odd)
    cfg_path = odd / "members" / "m1" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["base_size"] = 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="64-squeeze-none"):
        BoneAgePredictor.from_dir(odd)
    cfg["model"].update(base_size=100, framing="hand")  # same size, other framing: also another input
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="100-squeeze-hand"):
        BoneAgePredictor.from_dir(odd)


def test_choose_ensemble_compares_on_real_images_and_adopts_atomically(ensemble_dir, images, tmp_path, data_dir):
    from pipelines.choose_ensemble import adopt, compare, passes_rule

    imgs, male = images
    cases = read_cases(data_dir / "train.csv").cases.head(len(imgs))
    age = cases["boneage"].to_numpy(float)
    shipped = BoneAgePredictor.from_dir(MODEL_DIR)
    candidate = BoneAgePredictor.from_dir(ensemble_dir).members[0]  # the random-head network
    res = compare(shipped, candidate, imgs, male, age)
    for tag in ("plain", "tta"):
        r = res[tag]
        assert r["candidate_mae"] > r["shipped_mae"] + 5  # an untrained head is far off
        lo, hi = r["ensemble_minus_shipped"]["ci95"]
        assert lo <= r["ensemble_minus_shipped"]["mae_diff"] <= hi
        assert r["ensemble_mae"] > r["shipped_mae"]  # averaging in a bad network hurts ...
    assert not passes_rule(res, tta=True)  # ... and the rule refuses it

    model_dir = tmp_path / "model"
    shutil.copytree(MODEL_DIR, model_dir, ignore=shutil.ignore_patterns("members", "last.pt"))
    before = json.loads((model_dir / "config.json").read_text()).get("inference", {}).get("members", [])
    dest = adopt(model_dir, ensemble_dir / "members" / "m1", "extra", "a test")
    assert (dest / "model.pt").is_file() and not (dest.parent / "extra.tmp").exists()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["inference"]["members"] == [*before, "members/extra"]
    assert config["inference"]["members_chosen_on"] == "a test"
    assert len(BoneAgePredictor.from_dir(model_dir).members) == len(before) + 1
    with pytest.raises(FileExistsError):
        adopt(model_dir, ensemble_dir / "members" / "m1", "extra", "again")
    with pytest.raises(ValueError):
        adopt(model_dir, ensemble_dir / "members" / "m1", "../escape", "bad name")
