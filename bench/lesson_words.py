"""Visible prose per lesson: words shown by default (before each section's '### Go deeper').

Run from the repository root: `python bench/lesson_words.py`. Prose that pages write themselves
(f-strings beside metrics) is not counted; the target per lesson is about 350 words.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lab_ui  # noqa: E402

LATEX = re.compile(r"\$\$.*?\$\$", re.S)


def words(text: str) -> int:
    return len(LATEX.sub(" ", text).split())


def visible_words(name: str) -> tuple[int, int]:
    """(shown, behind "Go deeper") word counts of assets/lessons/<name>.md."""
    shown = deeper = 0
    for section in lab_ui._lesson_sections(name):
        body, more = lab_ui.lesson_text(name, section)
        shown, deeper = shown + words(body), deeper + words(more)
    return shown, deeper


def main() -> None:
    names = ["home", *(lesson.url for lesson in lab_ui.LESSONS)]
    print(f"{'lesson':<12} {'shown':>6} {'deeper':>7}")
    for name in names:
        if (lab_ui.ROOT / "assets" / "lessons" / f"{name}.md").exists():
            shown, deeper = visible_words(name)
            print(f"{name:<12} {shown:>6} {deeper:>7}")


if __name__ == "__main__":
    main()
