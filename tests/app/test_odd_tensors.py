"""Every lesson on odd tensors a user may bring: odd shapes and odd values never crash a page.

A matrix a lesson cannot use gets a one-line message (`st.error` / `st.warning` / `st.info`) and
the page goes on; a crash would show Streamlit's generic exception box instead.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lab_ui
from tests.app.apptest_util import run_page, use_local_path

SHAPES = {"1x200": (1, 200), "200x1": (200, 1), "7x13": (7, 13), "3x4096": (3, 4096)}
VALUES = {
    "zeros": lambda shape: torch.zeros(shape),
    "constant": lambda shape: torch.full(shape, 0.25),
    "nan": lambda shape: torch.full(shape, float("nan")),
    "inf": lambda shape: torch.where(torch.rand(shape) > 0.5, torch.inf, 1.0),
    "denormal": lambda shape: torch.full(shape, 1e-40),
}
CASES = {**{f"normal-{name}": torch.randn(shape) for name, shape in SHAPES.items()},
         **{f"{name}-16x64": make((16, 64)) for name, make in VALUES.items()}}
PAGES = [lesson.file for lesson in lab_ui.LESSONS]


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("odd")
    files = {}
    for name, tensor in CASES.items():
        files[name] = folder / f"{name}.safetensors"
        save_file({"odd.proj.weight": tensor.contiguous()}, str(files[name]))
    return files


@pytest.mark.parametrize("lesson_file", PAGES, ids=lambda p: p.split("/")[-1][:-3])
def test_no_lesson_crashes_on_an_odd_tensor(lesson_file, odd_files):
    page = lesson_file
    at = run_page(page)
    for name, path in odd_files.items():
        use_local_path(at, str(path))
        assert not at.exception, (page, name, at.exception)
        assert at.selectbox(key="layer").value == "odd.proj", (page, name)
        shown = [m.value for m in (*at.error, *at.warning, *at.sidebar.error, *at.sidebar.warning)]
        assert all("\n" not in m for m in shown), (page, name, shown)
