"""The dashboard's one entry point (``dashboard/app.py``): every page in the sidebar order, each with its heading
and the artifact-manifest banner exactly once, and no page that sets up paths or its own frame."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import streamlit as st

from boneage.store.artifacts import ArtifactStore
from dashboard.common import PAGES
from tests.dashboard.app_driver import open_page

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
STORE = ArtifactStore.default()


def test_page_table_lists_every_page_script_once_in_file_order():
    scripts = sorted((p.relative_to(DASHBOARD).as_posix() for p in (DASHBOARD / "views").glob("*.py")),
                     key=lambda f: int(f.split("/")[1].split("_")[0]))  # 10_Patient after 9_...
    assert [p.file for p in PAGES] == scripts
    assert [p.title for p in PAGES] == ["Home", "Overview", "Error browser", "Explain", "Embeddings", "Uncertainty",
                                        "Fairness", "Predict", "Maturation atlas", "Explanation audit", "Patient"]
    assert [p.url_path for p in PAGES][:3] == ["", "Overview", "Error_browser"]


def test_no_page_edits_sys_path_or_sets_up_its_own_frame():
    for f in [*(DASHBOARD / "views").glob("*.py"), DASHBOARD / "app.py", DASHBOARD / "common.py"]:
        src = f.read_text()
        assert "sys.path" not in src and "noqa: E402" not in src, f
        if f.parent.name == "views":
            assert not re.search(r"set_page_config|manifest_banner|page_frame|st\.title\(", src), f


@pytest.fixture
def stale_artifacts(tmp_path, monkeypatch):
    """The committed artifact set with metrics.json changed after the manifest was written."""
    for p in STORE.root.iterdir():
        if p.name != "metrics.json":
            (tmp_path / p.name).symlink_to(p)
    metrics = json.loads((STORE.root / "metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps(metrics, indent=1))
    monkeypatch.setenv("BONEAGE_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv("BONEAGE_DATA", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield tmp_path
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.mark.parametrize("spec", PAGES, ids=lambda p: p.url_path or "Home")
def test_every_page_gets_its_heading_and_one_manifest_banner(spec, stale_artifacts):
    at = open_page(spec.file)
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [spec.header]
    banners = [w.value for w in at.warning if "missing or stale" in w.value]
    assert len(banners) == 1 and "metrics.json: changed since the manifest was written" in banners[0], banners
