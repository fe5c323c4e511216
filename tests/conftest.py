import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _serve_like_a_running_server(monkeypatch):
    """Run AppTest the way a live server runs after its first request: always through app.py.

    AppTest re-detects the `pages/` folder on every run and would otherwise run lesson files on
    their own (Streamlit's legacy multipage mode); lab_ui reroutes such runs with a rerun, which
    would swallow button clicks in tests. The browser tests cover the real first-request path.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
