"""Shared AppTest helpers: run the real router (app.py) and switch to a lesson page."""
from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def routed_pages_manager_init(original):
    """A PagesManager.__init__ that makes every AppTest pass run through app.py, as a live server
    does after its first request.

    AppTest re-detects the `pages/` folder on every run and would otherwise run lesson files on
    their own (Streamlit's legacy multipage mode); lab_ui reroutes such runs with a rerun, which
    would swallow button clicks. The browser tests cover the real first-request path.
    """
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    return init


def run_page(page: str | None = None, query: dict[str, str] | None = None, timeout: float = 120) -> AppTest:
    """app.py with the shared sidebar, switched to `page` (e.g. "pages/symmetric.py"), run once."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    if query:
        at.query_params.update(query)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def use_local_path(at: AppTest, path: str) -> AppTest:
    """Point the sidebar at a local .safetensors file or folder, as a user would, and rerun."""
    at.radio(key="source_kind").set_value("local").run()
    at.text_input(key="source_path").set_value(path).run()
    assert not at.exception, at.exception
    return at
