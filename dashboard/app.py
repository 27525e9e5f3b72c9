"""The dashboard's one entry point (``./run.sh`` runs ``streamlit run dashboard/app.py``).

Every page goes through this frame: Streamlit's ``st.navigation`` lists :data:`dashboard.common.PAGES` in the
sidebar, and the frame gives each page its tab title, heading and the artifact-manifest banner before running
the page's own script, so no page sets these up itself.
"""
from __future__ import annotations

import streamlit as st

from dashboard import common

pages = {spec.title: st.Page(spec.file, title=spec.title, default=not spec.url_path,
                             **({"url_path": spec.url_path} if spec.url_path else {}))
         for spec in common.PAGES}
page = st.navigation(list(pages.values()))
common.page_frame(next(spec for spec in common.PAGES if spec.title == page.title))
page.run()
