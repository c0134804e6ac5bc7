"""Places that survive a reload: the URL carries the tab and the selected change request or run (`?tab=review&cr=3`:
a link a reviewer can paste into chat), reload and Back keep them, and LlamaBoard's unsaved Train form is kept in the
browser's storage for the user who typed it.

The URL is written by the browser alone (JS-only events: no server call per click); on page load the server reads
it back once and selects the tab and the request or run; the form draft is restored from `localStorage` under the
signed-in user's name, so another user signing in on the same browser starts with their own (or none).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import gradio as gr

from backend.places import CHANGE_REQUEST, REVIEW_TAB, RUN, RUNS_TAB, TAB  # the URL pull requests link to
from webui.context import AppContext

# In the page's <head>: the one place that writes the URL, and Back/Forward showing the place they go to.
HEAD = (
    """
<script>
window.lfopsPlace = (key, value) => {
  const url = new URL(window.location.href);
  const now = url.searchParams.get(key);
  const next = value === null || value === undefined || value === "" ? null : String(value);
  if (next === "0") return window.lfopsPlace(key, null);  // a typed 0 names no request or run
  if (now === next) return;
  if (next === null) url.searchParams.delete(key); else url.searchParams.set(key, next);
  if (key === "TAB") { url.searchParams.delete("CR"); url.searchParams.delete("RUN"); }
  window.history.pushState({}, "", url);
};
window.addEventListener("popstate", () => window.location.reload());
</script>
""".replace('"TAB"', f'"{TAB}"')
    .replace('"CR"', f'"{CHANGE_REQUEST}"')
    .replace('"RUN"', f'"{RUN}"')
)
DRAFT_KEY = "lfops-draft:"  # + user name: LlamaBoard's Train form as the user left it, in localStorage
_TABS = ("llamaboard", REVIEW_TAB, RUNS_TAB, "serving", "monitoring", "admin")


class Places:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.size = 0  # how many values a draft of the form holds

    def wire(self, demo: gr.Blocks, tabs: gr.Tabs, review: Any, runs: Any, form: list[Any]) -> None:
        """Inside `with demo:` after every tab is built: URL <-> tab and selection, and the form's draft."""
        self.size = len(form)
        search = gr.Textbox(visible=False, elem_id="lfops-place-search")
        user = gr.Textbox(visible=False, elem_id="lfops-place-user")
        draft = gr.Textbox(visible=False, elem_id="lfops-place-draft")
        for tab in tabs.children:
            if isinstance(tab, gr.Tab) and tab.id in _TABS:
                tab.select(None, None, None, js=f"() => window.lfopsPlace('{TAB}', '{tab.id}')")
        review.cr_id.change(None, [review.cr_id], None, js=f"(n) => window.lfopsPlace('{CHANGE_REQUEST}', n)")
        runs.run_id.change(None, [runs.run_id], None, js=f"(n) => window.lfopsPlace('{RUN}', n)")
        demo.load(
            self.on_place,
            [search],
            [tabs, review.cr_id, runs.run_id, user],
            js="(x) => window.location.search",
            concurrency_limit=None,
        ).then(self.on_draft, [user, draft], form, js=_OPEN_SELECTED_AND_READ_DRAFT).then(
            self.on_draft,
            [user, draft],
            form,
            js=_READ_DRAFT,  # again: after LlamaBoard's model-name guesses
        ).then(None, None, None, js="() => { window.lfopsDraftReady = true; }")  # (a JS-only step ends a chain)
        # Kept from then on: the page's own start (LlamaBoard's initial values) must not overwrite the draft first.
        keep = f"(user, ...values) => {{ if (user && window.lfopsDraftReady) {_WRITE_DRAFT} }}"
        for component in form:
            component.change(None, [user, *form], None, js=keep)

    def on_place(self, search: str, request: gr.Request) -> tuple[Any, Any, Any, str]:
        """The tab and the selection a URL names; anything else in it is ignored."""
        query = parse_qs((search or "").lstrip("?"))
        tab = (query.get(TAB) or [""])[0]
        cr, run = _number(query.get(CHANGE_REQUEST)), _number(query.get(RUN))
        if not tab and cr:
            tab = REVIEW_TAB
        elif not tab and run:
            tab = RUNS_TAB
        actor = self.ctx.signed_in(request)
        return (
            gr.Tabs(selected=tab) if tab in _TABS else gr.update(),
            cr if cr else gr.update(),
            run if run else gr.update(),
            actor.name if actor else "",
        )

    def on_draft(self, user: str, draft: str) -> list[Any]:
        """The form as this user left it, or no change (no draft, or one from another form layout)."""
        count = self.size
        try:
            values = json.loads(draft) if user and draft else None
        except ValueError:
            values = None
        if not isinstance(values, list) or len(values) != count:
            return [gr.update() for _ in range(count)]
        return values


# The request or run the URL named is shown by clicking its Open/Show button once its tab is on screen (a table
# filled while its tab is hidden stays empty: a fixed delay lost that race on a busy machine, so the button is
# watched until it has been on screen for two looks in a row), then the draft is read.
_OPEN_SELECTED_AND_READ_DRAFT = (
    """(user, d) => {
  const params = new URLSearchParams(window.location.search);
  const button = params.get('"""
    + CHANGE_REQUEST
    + """') ? '#lfops-cr-open' : params.get('"""
    + RUN
    + """') ? '#lfops-run-show' : null;
  let seen = 0, looks = 0;
  const open = () => {
    const el = button && document.querySelector(button);
    seen = el && el.offsetParent !== null ? seen + 1 : 0;
    if (seen >= 2) el.click(); else if (++looks < 300) setTimeout(open, 100);
  };
  if (button) setTimeout(open, 100);
  return [user, user ? localStorage.getItem('"""
    + DRAFT_KEY
    + """' + user) : ''];
}"""
)
_WRITE_DRAFT = "localStorage.setItem('" + DRAFT_KEY + "' + user, JSON.stringify(values));"
_READ_DRAFT = "(user, d) => [user, user ? localStorage.getItem('" + DRAFT_KEY + "' + user) : '']"


def _number(values: list[str] | None) -> int | None:
    text = (values or [""])[0]
    return int(text) if text.isascii() and text.isdigit() and 0 < len(text) < 10 else None
