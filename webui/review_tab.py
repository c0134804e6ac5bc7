"""The Review tab: change requests with filters; one request's YAML diff, hyperparameter table against main,
validation and reviews; approve, request changes, merge and close, offered by role and checked again in backend/."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr

from backend.places import REVIEW_TAB
from backend.review import ChangeRequestDetail
from backend.review_status import ChangeRequestStatus
from webui.context import AppContext
from webui.errors import as_message, as_warning, invalid, shows_errors
from webui.fields import chosen_number
from webui.paging import PAGE, page_offset
from webui.render import diff_html, md_code, md_text, value_text

if TYPE_CHECKING:
    from backend.auth import Actor
    from backend.retrain.service import SignalView
    from backend.review import ChangeRequestView, ParamRow


def _param_rows(params: list[ParamRow], show_all: bool) -> list[list[str]]:
    rows = sorted(params, key=lambda p: _CHANGE_ORDER.get(p.change, 9))
    return [
        [p.key, value_text(p.before), value_text(p.after), p.change]
        for p in rows
        if show_all or p.change != "unchanged"
    ]


LIST_HEADERS = ["#", "status", "author", "config", "title", "updated"]
PARAM_HEADERS = ["parameter", "before", "after", "change"]
_CHANGE_ORDER = {"changed": 0, "added": 1, "removed": 2, "unchanged": 3}
# The outputs of `on_show` after its header, when there is no change request to show: nothing to act on either.
_HIDDEN = gr.update(visible=False)
_EMPTY_DETAIL = ("#### Hyperparameters", [], "#### YAML diff", "", "", "", "", "", _HIDDEN, _HIDDEN, _HIDDEN, _HIDDEN)


class ReviewTab:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def build(self) -> None:
        with gr.Tab("Review", id=REVIEW_TAB, elem_id="lfops-tab-review"):
            with gr.Row(equal_height=True):
                self.status = gr.Dropdown(
                    [("all", "all"), *((s.label, s.value) for s in ChangeRequestStatus.listed())],
                    value="all",
                    label="Status",
                    scale=1,
                    elem_id="lfops-filter-status",
                )
                self.author = gr.Textbox(
                    label="Author", placeholder="user name", scale=1, elem_id="lfops-filter-author"
                )
                self.page = gr.Number(
                    label=f"Page ({PAGE} a page)", value=1, precision=0, minimum=1, scale=0, elem_id="lfops-cr-page"
                )
                self.refresh = gr.Button("Refresh", scale=0, elem_id="lfops-cr-refresh")
            self.table = gr.Dataframe(
                headers=LIST_HEADERS,
                interactive=False,
                wrap=True,
                column_widths=["5%", "11%", "9%", "24%", "37%", "14%"],
                elem_id="lfops-cr-table",
                label="Change requests",
            )
            with gr.Row(equal_height=True):
                self.cr_id = chosen_number("Change request #", "lfops-cr-id", scale=1)
                self.open_btn = gr.Button("Open", scale=0, elem_id="lfops-cr-open")
            self.header = gr.Markdown(elem_id="lfops-cr-header")
            with gr.Row():
                with gr.Column(scale=1):
                    self.params_title = gr.Markdown("#### Hyperparameters", elem_id="lfops-cr-params-title")
                    with gr.Row():
                        self.show_all = gr.Checkbox(label="show unchanged parameters", value=False)
                        self.defaults = gr.Checkbox(
                            label="compare with LLaMA-Factory's defaults", value=False, elem_id="lfops-cr-defaults"
                        )
                    self.params = gr.Dataframe(
                        headers=PARAM_HEADERS,
                        interactive=False,
                        wrap=True,
                        max_height=720,
                        column_widths=["34%", "22%", "30%", "14%"],
                        elem_id="lfops-cr-params",
                    )
                with gr.Column(scale=1):
                    self.diff_title = gr.Markdown("#### YAML diff")
                    self.diff = gr.HTML(elem_id="lfops-cr-diff")
            self.since = gr.Markdown(elem_id="lfops-cr-since")
            self.since_diff = gr.HTML(elem_id="lfops-cr-since-diff")
            self.validation = gr.Markdown(elem_id="lfops-cr-validation")
            self.reviews = gr.Markdown(elem_id="lfops-cr-reviews")
            self.comment = gr.Textbox(label="Review comment", lines=2, elem_id="lfops-review-comment")
            with gr.Row():
                self.approve_btn = gr.Button("Approve", variant="primary", elem_id="lfops-approve-btn")
                self.changes_btn = gr.Button("Request changes", elem_id="lfops-request-changes-btn")
                self.merge_btn = gr.Button("Merge", variant="primary", elem_id="lfops-merge-btn")
                self.close_btn = gr.Button("Close request", variant="stop", elem_id="lfops-close-btn")
            self.reviewer_note = gr.Markdown(
                "Approving and merging is for reviewers and admins; you can close your own change requests.",
                elem_id="lfops-reviewer-note",
            )
            self.result = gr.Markdown(elem_id="lfops-review-result")

        actions = [self.approve_btn, self.changes_btn, self.merge_btn, self.close_btn]
        detail = [self.header, self.params_title, self.params, self.diff_title, self.diff, self.since, self.since_diff]
        detail += [self.validation, self.reviews, *actions]
        shown = [self.cr_id, self.show_all, self.defaults]
        listing = dict(fn=self.on_list, inputs=[self.status, self.author, self.page], outputs=[self.table])
        self.refresh.click(**listing, api_name="review_list")
        self.status.change(**listing)
        self.author.submit(**listing)
        self.page.submit(**listing)
        self.ctx.on_tab_load(**listing)
        # Opening another request clears the comment typed for the last one (an Approve would post it there).
        clear = dict(fn=lambda: "", outputs=[self.comment], queue=False)
        self.open_btn.click(self.on_show, shown, detail, api_name="review_show").then(**clear)
        self.cr_id.submit(self.on_show, shown, detail).then(**clear)
        self.show_all.change(self.on_show, shown, detail)
        self.defaults.change(self.on_show, shown, detail)
        self.table.select(self.on_select, [self.table], [self.cr_id]).then(self.on_show, shown, detail).then(**clear)
        for button, fn, api_name in (
            (self.approve_btn, self.on_approve, "review_approve"),
            (self.changes_btn, self.on_request_changes, "review_request_changes"),
            (self.merge_btn, self.on_merge, "review_merge"),
            (self.close_btn, self.on_close, "review_close"),
        ):
            button.click(fn, [self.cr_id, self.comment], [self.result], api_name=api_name, concurrency_limit=8).then(
                self.on_show, shown, detail
            ).then(**listing)
        self.ctx.gate(self.approve_btn, "review.decide")
        self.ctx.gate(self.changes_btn, "review.decide")
        self.ctx.gate(self.merge_btn, "review.merge")
        self.ctx.gate(self.reviewer_note, "review.decide", invert=True)

    # ---- handlers -----------------------------------------------------------------------------------------------

    @shows_errors(as_warning([]))
    def on_list(self, status: str, author: str, request: gr.Request, page: float | None = 1) -> list[list[Any]]:
        views = self.ctx.ws.changes.list(
            self.ctx.auth.actor(request),
            status=None if status in ("", "all", None) else status,
            author=(author or "").strip() or None,
            limit=PAGE,
            offset=page_offset(page),
        )
        return [
            [v.id, v.status.label, v.author, v.config_path, v.title, f"{v.updated_at:%Y-%m-%d %H:%M}"] for v in views
        ]

    @staticmethod
    def on_select(table: Any, evt: gr.SelectData) -> Any:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return int(table.iloc[row, 0])
        except (AttributeError, IndexError, ValueError, TypeError):
            return gr.update()

    @shows_errors(as_message(lambda cr_id, **_: f"Change request #{int(cr_id)}", *_EMPTY_DETAIL))
    def on_show(self, cr_id: float | None, show_all: bool, defaults: bool, request: gr.Request) -> tuple:
        if not cr_id:
            return ("Choose a change request from the list, or type its number.", *_EMPTY_DETAIL)
        actor = self.ctx.auth.actor(request)
        detail = self.ctx.ws.changes.show(actor, int(cr_id), against_defaults=bool(defaults))
        evidence = self.ctx.ws.retrain.evidence(actor, int(cr_id))
        return (*self.render(detail, show_all, evidence), *self.offered(actor, detail.request))

    @staticmethod
    def offered(actor: Actor | None, view: ChangeRequestView) -> tuple[Any, ...]:
        """Approve, Request changes, Merge and Close: shown only where they can apply (the backend checks again)."""
        open_ = view.status.under_review
        can = lambda p: actor is not None and actor.can(p)  # noqa: E731
        mine = actor is not None and actor.name == view.author
        return (
            gr.update(visible=open_ and can("review.decide")),
            gr.update(visible=open_ and can("review.decide")),
            gr.update(visible=view.status == ChangeRequestStatus.APPROVED and can("review.merge")),
            gr.update(visible=open_ and (mine or can("review.merge"))),
        )

    @staticmethod
    def render(detail: ChangeRequestDetail, show_all: bool = False, evidence: list[SignalView] | None = None) -> tuple:
        r = detail.request
        approvers = ", ".join(r.approvers) or "nobody yet"
        lines = [
            f"### #{r.id} {md_text(r.title)} — {r.status.label}",
            f"author **{md_text(r.author)}** · branch {md_code(r.branch)} · head {md_code(r.head_commit[:12])} · "
            f"file {md_code(r.config_path)} · approved for this head by {md_text(approvers)}",
        ]
        if detail.derived_from:
            lines.append(f"opened from {md_code(detail.derived_from)}")
        if r.merged_commit:
            lines.append(f"merged as {md_code(r.merged_commit[:12])} by {md_text(r.merged_by)}")
        if r.pull_request is not None:
            pr = r.pull_request
            link = f"[pull request #{pr.number}]({pr.url})" if pr.url.startswith(("https://", "http://")) else ""
            lines.append(f"{link or f'pull request #{pr.number}'} on {md_text(pr.forge)}: {md_text(pr.label)}")
        if r.description.strip() != r.title.strip():
            lines.append("\n" + md_text(r.description))
        table = _param_rows(detail.params, show_all)
        changed = sum(p.change != "unchanged" for p in detail.params)
        title = f"#### Hyperparameters (before = {md_text(detail.baseline)}; {changed} changed)"
        diff_title = f"#### YAML diff against {md_text(detail.baseline)}"
        validation = "**Validation:**\n" + "\n".join(f"- {md_text(v)}" for v in detail.validation)
        if detail.preflight:  # which launch targets can run it as it is (backend.preflight)
            validation += "\n\n**Launch targets:**\n" + "\n".join(f"- {md_text(n)}" for n in detail.preflight)
        if r.reviews:
            reviews = "**Reviews:**\n" + "\n".join(
                f"- {rv.at:%Y-%m-%d %H:%M} **{md_text(rv.reviewer)}** {rv.decision.label}"
                f" (on {md_code(rv.head_commit[:10])})" + (f": {md_text(rv.comment)}" if rv.comment else "")
                for rv in r.reviews
            )
        else:
            reviews = "**Reviews:** none yet"
        if evidence:  # a retrain request (backend.retrain): the signal that opened it, then the ones added since
            reviews = retrain_evidence(evidence) + "\n\n" + reviews
        since, since_diff = "", ""
        if detail.last_reviewed_commit:
            moved = [p for p in detail.review_params if p.change != "unchanged"]
            since = f"#### Changed since the last review (on {md_code(detail.last_reviewed_commit[:10])}): " + (
                ", ".join(
                    f"{md_code(p.key)} {md_text(value_text(p.before))} → {md_text(value_text(p.after))}" for p in moved
                )
                or "no hyperparameter"
            )
            since_diff = diff_html(detail.review_diff, empty="no difference since the last review")
        return (
            "\n\n".join(lines),
            title,
            table,
            diff_title,
            diff_html(detail.yaml_diff, empty=f"no difference from {detail.baseline}"),
            since,
            since_diff,
            validation,
            reviews,
        )

    def _act(
        self, verb: str, cr_id: float | None, request: gr.Request, call: Callable[[Actor, int], ChangeRequestView]
    ) -> str:
        if not cr_id:
            raise invalid("change request", "choose one first")
        view = call(self.ctx.auth.actor(request), int(cr_id))
        return f"**#{view.id} {verb}** — now {view.status.label}"

    @shows_errors(as_message("Not approved"))
    def on_approve(self, cr_id: float | None, comment: str, request: gr.Request) -> str:
        changes = self.ctx.ws.changes
        return self._act("approved", cr_id, request, lambda a, i: changes.approve(a, i, comment or ""))

    @shows_errors(as_message("Not sent back"))
    def on_request_changes(self, cr_id: float | None, comment: str, request: gr.Request) -> str:
        changes = self.ctx.ws.changes
        return self._act("sent back", cr_id, request, lambda a, i: changes.request_changes(a, i, comment or ""))

    @shows_errors(as_message("Not merged"))
    def on_merge(self, cr_id: float | None, comment: str, request: gr.Request) -> str:
        message = self._act("merged", cr_id, request, self.ctx.ws.changes.merge)
        self.ctx.refresh_data()  # a merge may change data/: LlamaBoard's dataset list follows main
        return message

    @shows_errors(as_message("Not closed"))
    def on_close(self, cr_id: float | None, comment: str, request: gr.Request) -> str:
        return self._act("closed", cr_id, request, self.ctx.ws.changes.close)


def retrain_evidence(evidence: list[SignalView]) -> str:
    """The signals behind a retrain change request, each with its evidence (escaped: it quotes prompts)."""
    items = []
    for e in evidence:
        how = "opened this request" if e.outcome == "opened" else "added as a comment"
        where = f" on deployment {md_code(e.deployment)}" if e.deployment else ""
        summary = "  \n  ".join(md_text(line) for line in e.summary.splitlines()[:40] if line.strip())
        items.append(
            f"- {e.received_at:%Y-%m-%d %H:%M} **{md_text(e.kind)}** {md_code(e.evidence_ref)}{where}, observed "
            f"{e.observed_at:%Y-%m-%d %H:%M}: {how}" + (f"  \n  {summary}" if summary else "")
        )
    return "**Retrain evidence** (the retrain bot proposed this; it cannot approve or merge):\n" + "\n".join(items)
