"""Input fields the tabs share where Gradio's own default would mislead."""

from __future__ import annotations

from typing import Any

import gradio as gr

# Shown in an empty number box. Gradio fills a Number that has neither a value nor a placeholder with 0 (in the
# browser, before anyone types), so "Run #" read 0 and sent 0: a number nobody chose.
EMPTY = "—"


def chosen_number(label: str, elem_id: str, **kwargs: Any) -> gr.Number:
    """A whole number the user types to pick one thing (a change request, a run, a token): empty until chosen."""
    return gr.Number(label=label, value=None, precision=0, placeholder=EMPTY, elem_id=elem_id, **kwargs)
