"""The follow-up command and the predict command's clinical columns, end to end on real training radiographs
(a demonstration series: films of different children assigned to one made-up patient id)."""
import datetime as dt

import pandas as pd
import pytest

from boneage.growth.sds import bone_age_sds
from pipelines import followup, predict

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cases(data_dir, tmp_path_factory):
    train = pd.read_csv(data_dir / "train.csv")
    boys = train[train["male"]].sort_values("id")
    ids = [boys[boys["boneage"] == m]["id"].iloc[0] for m in (120, 138, 156)]
    girl = train[~train["male"]]["id"].iloc[0]
    rows = [
        dict(id=ids[0], sex="M", patient_id="A", birth_date="2010-01-01", study_date="2020-01-01", height_cm="138"),
        dict(id=ids[1], sex="M", patient_id="A", birth_date="2010-01-01", study_date="2021-07-01", height_cm="146"),
        dict(id=ids[2], sex="M", patient_id="A", birth_date="2010-01-01", study_date="2023-01-01", height_cm="",
             father_height_cm="182", mother_height_cm="168"),
        dict(id=girl, sex="F", patient_id="A", birth_date="2010-01-01", study_date="2023-13-01"),  # bad date
        dict(id=ids[1] + 100000, sex="M", patient_id="B", chronological_age_months="130"),  # no image
        dict(id=boys["id"].iloc[5], sex="M", patient_id="C", chronological_age_months="250"),  # beyond the reference
        dict(id=boys["id"].iloc[6], sex="M", patient_id="D", birth_date="2015-01-01", study_date="2014-01-01"),
    ]
    path = tmp_path_factory.mktemp("fu") / "cases.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path, ids, girl


def test_followup_writes_one_row_per_patient_with_two_films(cases, data_dir, tmp_path, capsys):
    path, ids, girl = cases
    out, films = tmp_path / "fu.csv", tmp_path / "films.csv"
    rc = followup.main(["--image-dir", str(data_dir / "train"), "--cases", str(path), "--output", str(out),
                        "--films", str(films)])
    err = capsys.readouterr().err
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["patient_id", "films", "first_study_date", "last_study_date", "ba_velocity",
                                   "ba_velocity_lower_90", "ba_velocity_upper_90", "note"]
    assert list(table["patient_id"]) == ["A"]  # B has no readable film, C and D one each
    a = table.iloc[0]
    assert a["films"] == 4 and a["first_study_date"] == "2020-01-01"
    assert a["ba_velocity_lower_90"] < a["ba_velocity"] < a["ba_velocity_upper_90"]
    assert "sex changes" in a["note"] and "no chronological age" in a["note"] and "not a date" not in a["note"]
    rows = pd.read_csv(films).set_index("id")
    assert "study_date '2023-13-01' is not a date" in rows.loc[girl, "notes"]
    # the velocity is the least-squares slope of the three dated readings
    dated = rows.loc[ids]
    x, y = dated["chronological_age_months"], dated["boneage_pred"]
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert a["ba_velocity"] == pytest.approx(slope, abs=0.01)
    assert "patient B: no readable film" in err and "patient C: only one readable film" in err


def test_predict_batch_carries_sds_adult_height_and_reasons(cases, data_dir, tmp_path):
    path, ids, girl = cases
    out = tmp_path / "pred.csv"
    assert predict.main(["--no-outlier-check", "--image-dir", str(data_dir / "train"), "--cases", str(path),
                         "--output", str(out)]) == 0
    rows = pd.read_csv(out).set_index("id")
    first = rows.loc[ids[0]]
    assert first["patient_id"] == "A" and first["study_date"] == "2020-01-01"
    ca = (dt.date(2020, 1, 1) - dt.date(2010, 1, 1)).days / (365.25 / 12)
    assert first["chronological_age_months"] == pytest.approx(ca, abs=0.05)
    ref = bone_age_sds(first["boneage_pred"], ca, True, interval=(first["lower_90"], first["upper_90"]))
    assert first["bone_age_sds"] == pytest.approx(ref.sds, abs=0.01) and first["sds_status"] == ref.status
    assert first["sds_reference"] == "Brush Foundation (Greulich & Pyle)"
    tall = rows[rows["predicted_adult_height_cm"].notna()]
    assert len(tall) >= 1 and (tall["adult_height_lower_90"] < tall["predicted_adult_height_cm"]).all()
    assert (tall["predicted_adult_height_cm"] < tall["adult_height_upper_90"]).all()
    for cid in ids[:2]:  # a height was given: a prediction, or the reason there is none
        r = rows.loc[cid]
        assert pd.notna(r["predicted_adult_height_cm"]) or "no adult height: bone age" in r["notes"]
    third = rows.loc[ids[2]]
    assert pd.isna(third["predicted_adult_height_cm"]) and third["target_height_cm"] == pytest.approx(181.5)
    beyond = rows.loc[rows["patient_id"] == "C"].iloc[0]
    assert pd.notna(beyond["boneage_pred"]) and pd.isna(beyond["bone_age_sds"]) and "outside" in beyond["notes"]
    before = rows.loc[rows["patient_id"] == "D"].iloc[0]
    assert pd.notna(before["boneage_pred"]) and "before birth_date" in before["notes"] and pd.isna(before["error"])
