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
    """Every AppTest pass goes through app.py (see apptest_util.routed_pages_manager_init)."""
    try:
        from streamlit.runtime.pages_manager import PagesManager

        from tests.app.apptest_util import routed_pages_manager_init
    except ImportError:  # the GPU machine runs the kernel tests without the app's dependencies
        return
    monkeypatch.setattr(PagesManager, "__init__", routed_pages_manager_init(PagesManager.__init__))
