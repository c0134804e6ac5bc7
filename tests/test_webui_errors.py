"""The WebUI's one error path (webui/errors.py): what a user reads when a handler fails, and what is logged."""

from __future__ import annotations

import ast
import inspect
import logging
import re
from pathlib import Path

import gradio as gr
from gradio.helpers import special_args

from backend.errors import LfopsError, NotFound, PermissionDenied, Problem, ValidationFailed
from tests.webui_fixtures import plain, request_for
from webui import llamaboard as lb
from webui.errors import as_message, as_warning, invalid, problems, shows_errors

WEBUI = Path(__file__).resolve().parents[1] / "webui"


class Tab:
    """A handler as the tabs write them: it raises, the decorator answers."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[str] = []

    @shows_errors(as_message(lambda run_id, **_: f"Run #{int(run_id)}", None))
    def on_show(self, run_id: float | None, request: gr.Request) -> tuple[str, object]:
        self.calls.append(getattr(request, "username", None))
        if self.error is not None:
            raise self.error
        return f"run {int(run_id)}", "figure"


def test_an_expected_error_becomes_the_handlers_outputs_with_its_title():
    assert Tab().on_show(3, request_for("alice")) == ("run 3", "figure")
    text, figure = Tab(NotFound("run #3: no such run")).on_show(3, request_for("alice"))
    assert plain(text) == "**Run #3:**\n- run #3: no such run" and figure is None


def test_a_validation_error_shows_one_line_per_problem_naming_the_field():
    error = lb.FormError([Problem("train.learning_rate", "must be a number"), Problem("train.dataset", "choose one")])
    text, _ = Tab(error).on_show(3, request_for("alice"))
    assert plain(text).splitlines()[1:] == ["- train.learning_rate: must be a number", "- train.dataset: choose one"]
    assert problems(invalid("change request", "choose one first")) == ["change request: choose one first"]


def test_the_form_error_is_a_validation_error_of_the_one_hierarchy():
    error = lb.FormError([Problem("train.max_samples", "must be a whole number")])
    assert isinstance(error, ValidationFailed) and isinstance(error, LfopsError)
    assert (error.code, error.field, str(error)) == (
        "invalid",
        "train.max_samples",
        "train.max_samples: must be a whole number",
    )


def test_an_unexpected_error_is_logged_once_and_shown_without_its_details(caplog):
    secret = "postgresql://lfops:hunter2@db/lfops"
    with caplog.at_level(logging.ERROR, logger="lfops.webui"):
        text, figure = Tab(KeyError(secret)).on_show(7, request_for("alice"))
    assert secret not in text and "hunter2" not in text and figure is None
    reference = re.search(r"reference ([0-9a-f]{8})", text).group(1)
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert reference in record.getMessage() and "Tab.on_show" in record.getMessage()
    assert record.exc_info[0] is KeyError  # the traceback is in the log, for the admins


def test_a_warning_handler_returns_its_empty_result_and_copies_it_each_time():
    @shows_errors(as_warning([]))
    def on_list(status: str, request: gr.Request) -> list:
        raise PermissionDenied("sign in first")

    first = on_list("all", request_for(None))
    first.append("changed by Gradio")
    assert on_list("all", request_for(None)) == []


def test_gradio_still_hands_the_decorated_handler_its_request():
    """Gradio finds `request: gr.Request` through the wrapper (signature and type hints), so handlers still see who
    is signed in; the route keeps the handler's name."""
    tab = Tab()
    inputs, _, _ = special_args(tab.on_show, [4], request_for("rita"))
    assert tab.on_show(*inputs) == ("run 4", "figure") and tab.calls == ["rita"]
    assert inspect.signature(tab.on_show) == inspect.signature(Tab.on_show.__wrapped__.__get__(tab))
    assert Tab.on_show.__name__ == "on_show"


def test_handlers_leave_error_messages_to_the_one_helper():
    """No tab catches the backend's errors itself (webui/auth.py's sign-in control flow aside)."""
    import backend.errors

    names = {name for name, value in vars(backend.errors).items() if isinstance(value, type)}
    names |= {"FormError", "Exception"}
    for path in WEBUI.glob("*.py"):
        if path.name in ("errors.py", "auth.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for n in ast.walk(node.type)}
                assert not caught & names, f"{path.name}:{node.lineno} catches {caught & names}"
