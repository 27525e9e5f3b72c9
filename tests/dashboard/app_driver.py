"""Open a dashboard page the way a user does: through the one entry point (``dashboard/app.py``), so the frame
(title, artifact banner, navigation) runs around the page as in the browser. Shared by the AppTest page tests."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def open_page(page: str | Path | None = None, session: dict | None = None, timeout: float = 120) -> AppTest:
    """Run the app on ``page`` (a script under ``dashboard/``, e.g. ``views/1_Overview.py``; None: Home) with
    ``session`` entries set first; returns the AppTest after the run (exceptions are the caller's to check)."""
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    if page is not None:
        page = Path(page)
        at.switch_page(str(page.relative_to(APP.parent) if page.is_absolute() else page))
    for k, v in (session or {}).items():
        at.session_state[k] = v
    if page is not None or session:
        at.run()
    return at
