"""The WebUI's one error path: what a user reads when an event handler fails.

Handlers raise; `shows_errors` turns the exception into the handler's outputs. A `LfopsError` is expected: the user
reads its line, or one line per problem of a `ValidationFailed`, each naming the field as the form names it. Anything
else is a bug or an outage: it is logged here, once, with its traceback and a reference, and the user reads only that
reference (its message may hold paths, SQL or worse).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import secrets
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import gradio as gr

from backend.errors import LfopsError, Problem, ValidationFailed
from webui.render import error_md

log = logging.getLogger("lfops.webui")

P = ParamSpec("P")
T = TypeVar("T")
# Builds a handler's outputs from the lines to show and the handler's own arguments, by name.
Render = Callable[..., Any]


def invalid(field: str, reason: str) -> ValidationFailed:
    """The error for one bad form input: `field` as the form labels it."""
    return ValidationFailed([Problem(field, reason)])


def problems(exc: BaseException, where: str = "", sentences: bool = False) -> list[str]:
    """The lines a user reads about `exc`. An unexpected error is logged here, the only place, and shown generically.

    `sentences` writes a form field's problem as a sentence ("GPUs per node must be 0 or more") instead of
    "field: reason", for forms whose labels read as the subject of the reason."""
    if isinstance(exc, ValidationFailed) and exc.problems:
        return [f"{p.field} {p.reason}" if sentences else str(p) for p in exc.problems]
    if isinstance(exc, LfopsError):
        return [str(exc)]
    reference = secrets.token_hex(4)
    log.error("unexpected error %s in %s", reference, where or "a WebUI handler", exc_info=exc)
    return [f"unexpected error on the server (reference {reference}); it is logged for the admins, try again later"]


def shows_errors(render: Render, sentences: bool = False) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate an event handler: whatever it raises becomes `render(lines, **its_arguments)`, its outputs.

    The wrapper keeps the handler's name and signature, so Gradio still passes `gr.Request` and names the API route.
    """

    def decorate(handler: Callable[P, T]) -> Callable[P, T]:
        signature = inspect.signature(handler)

        @functools.wraps(handler)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return handler(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the one place where handlers' errors are shown
                bound = signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                return render(problems(exc, handler.__qualname__, sentences), **bound.arguments)

        return run

    return decorate


def as_message(title: str | Callable[..., str], *rest: Any) -> Render:
    """Errors as a titled Markdown list in the handler's first output; `rest` fills the outputs after it.

    `title` may be a function of the handler's arguments (by name), e.g. `lambda run_id, **_: f"Run #{run_id}"`.
    """

    def render(lines: list[str], **arguments: Any) -> Any:
        text = error_md(title(**arguments) if callable(title) else title, lines)
        return (text, *copy.deepcopy(rest)) if rest else text

    return render


def as_warning(*result: Any, title: str = "") -> Render:
    """Errors as a Gradio warning (a toast); the handler's outputs become `result` (None when there is none)."""

    def render(lines: list[str], **_arguments: Any) -> Any:
        prefix = f"{title}: " if title else ""
        gr.Warning(prefix + "; ".join(lines))
        outputs = copy.deepcopy(result)
        return outputs[0] if len(outputs) == 1 else (outputs or None)

    return render
