import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Triton reads TRITON_INTERPRET when it is first imported, and compressed-tensors imports it early;
# without a GPU every kernel test must run in the interpreter, so set it before anything loads.
if not os.path.exists("/dev/nvidia0") and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _serve_like_a_running_server(monkeypatch):
    """Run AppTest the way a live server runs after its first request: always through app.py.

    AppTest re-detects the `pages/` folder on every run and would otherwise run lesson files on
    their own (Streamlit's legacy multipage mode); lab_ui reroutes such runs with a rerun, which
    would swallow button clicks in tests. The browser tests cover the real first-request path.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # the GPU machine runs the kernel tests without the app's dependencies
        return
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
