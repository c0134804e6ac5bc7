"""The WebUI's lists of change requests and runs come in pages (PAGE rows), as the API's and the CLI's do."""

from __future__ import annotations

from sqlalchemy import select

from backend.store.models import ChangeRequest, User
from tests.webui_fixtures import build_in_process, request_for
from webui.paging import PAGE


def test_review_list_pages(env, monkeypatch):
    web = build_in_process(env)
    with env.ws.store.session() as s:
        alice = s.scalar(select(User).where(User.name == "alice"))
        for i in range(PAGE + 3):  # rows as saves leave them; the list is a query over them
            s.add(
                ChangeRequest(
                    title=f"cr {i}",
                    branch=f"alice/cr{i}",
                    base_commit="0" * 40,
                    head_commit="1" * 40,
                    config_path=f"configs/cr{i}.yaml",
                    config_hash="h",
                    dataset_version="sha256:00",
                    author_id=alice.id,
                )
            )
    review = web.app.review
    first = review.on_list("all", "", request_for("alice"))
    assert len(first) == PAGE and first[0][0] == PAGE + 3
    second = review.on_list("all", "", request_for("alice"), 2)
    assert [row[0] for row in second] == [3, 2, 1]
    assert review.on_list("all", "", request_for("alice"), 3) == []
    warnings = []
    monkeypatch.setattr("gradio.Warning", lambda message: warnings.append(message))
    assert review.on_list("all", "", request_for("alice"), 10**9) == []
    assert warnings == ["offset: must be from 0 to 1000000, got 49999999950"]
    assert web.app.runs.on_list("all", "", "", request_for("alice"), 2) == []
