"""Races, on SQLite and PostgreSQL, against a remote that takes a second per push (a pre-receive hook sleeps):
concurrent merges of different change requests all land on a linear main, each validated; concurrent saves all
land, because no database transaction is held across a push."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from backend.gitstore import parse_trailers
from backend.review_status import ChangeRequestStatus
from backend.store.models import ChangeRequest


def slow_remote(env, seconds: int = 1) -> None:
    hook = env.origin / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\nsleep {seconds}\n")
    hook.chmod(0o755)


def config(env, seed: int) -> bytes:
    return env.example_yaml().replace(b"seed: 42", f"seed: {seed}".encode())


def run_all(calls) -> tuple[list, list[BaseException]]:
    results, errors = [None] * len(calls), []
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_six_concurrent_merges_all_land_on_a_linear_main(any_db_env):
    env = any_db_env
    alice, rita, admin = env.actor("alice"), env.actor("rita"), env.actor("admin")
    crs = [env.ws.changes.save(alice, config(env, 100 + i), f"race{i}", f"race {i}").change_request for i in range(6)]
    for cr in crs:
        env.ws.changes.approve(rita, cr)
    main_before = env.origin_git("rev-parse", "main").strip()
    slow_remote(env)  # every push runs the hook at once, then all but one lose the ref lock ("failed to update ref")
    mergers = [rita, admin] * 3
    results, errors = run_all(
        [lambda cr=cr, who=who: env.ws.changes.merge(who, cr) for cr, who in zip(crs, mergers, strict=True)]
    )
    assert errors == []
    assert {r.status for r in results} == {ChangeRequestStatus.MERGED}
    chain = env.origin_git("rev-list", "--first-parent", f"{main_before}..main").split()
    assert len(chain) == 6 and env.origin_git("rev-list", "--count", "--merges", f"{main_before}..main").strip() == "6"
    assert sorted(r.merged_commit for r in results) == sorted(chain)
    for merge in chain:  # each merge's first parent is the main it replaced, and names exactly one request
        trailers = parse_trailers(env.origin_git("log", "-1", "--format=%B", merge))
        assert len(trailers["Change-Request"]) == 1
    for i in range(6):
        assert f"seed: {100 + i}\n" in env.origin_git("show", f"main:configs/race{i}.yaml")
    assert env.origin_git("for-each-ref", "refs/heads/alice") == ""  # every merged branch deleted


def test_thirty_two_concurrent_saves_against_a_slow_remote_all_land(any_db_env):
    env = any_db_env
    alice = env.actor("alice")
    slow_remote(env)
    started = time.monotonic()
    calls = [lambda i=i: env.ws.changes.save(alice, config(env, 200 + i), f"s{i}", f"save {i}") for i in range(32)]
    results, errors = run_all(calls)
    elapsed = time.monotonic() - started
    assert errors == [], errors[:3]
    branches = env.origin_git("for-each-ref", "--format=%(refname:short)", "refs/heads/alice").split()
    assert sorted(branches) == sorted(f"alice/s{i}" for i in range(32))
    with env.ws.store.session() as s:
        statuses = s.execute(select(ChangeRequest.status, func.count()).group_by(ChangeRequest.status)).all()
    assert statuses == [(ChangeRequestStatus.OPEN.value, 32)]
    for i in range(32):
        assert f"seed: {200 + i}\n" in env.origin_git("show", f"alice/s{i}:configs/s{i}.yaml")
    assert elapsed < 32  # the pushes overlapped: not one second each, one after another
