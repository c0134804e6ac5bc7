"""One rule for names, branches and ids, on SQLite and PostgreSQL: refused with one line naming the field, and
nothing changed (origin's refs and the database, before and after)."""

from __future__ import annotations

import pytest

from backend.cli import main
from backend.errors import LfopsError, NotFound, SettingsError
from backend.names import BRANCH_MAX, CONFIG_PATH_MAX, ID_MAX, NAME_MAX, check_branch, check_name
from backend.settings import Settings
from tests.snapshots import snapshot

LONG = "a" * 100 + "/" + "b" * 100 + "/" + "c" * 65  # 267 characters, every part within the part limit


@pytest.mark.parametrize(
    ("branch", "reason"),
    [
        ("HEAD", "reserved (a name Git uses itself)"),
        ("head", "reserved (a name Git uses itself)"),
        ("ORIG_HEAD", "reserved (a name Git uses itself)"),
        ("main", "reserved (the main branch)"),
        ("Main", "reserved (the main branch)"),
        ("refs/heads/main", "reserved (names under refs/ are Git's own)"),
        ("refs/x", "reserved (names under refs/ are Git's own)"),
        ("alice/x\n", "must not start or end with whitespace or hold control characters"),
        (" alice/x", "must not start or end with whitespace or hold control characters"),
        ("alice/x ", "must not start or end with whitespace or hold control characters"),
        ("alice/\x07bell", "must not start or end with whitespace or hold control characters"),
        (LONG, f"267 characters is too long (at most {BRANCH_MAX})"),
        ("alice/x.lock/y", "is not allowed"),
        ("alice/@{-1}", "is not allowed"),
    ],
)
def test_bad_branches_are_refused_on_both_databases(any_db_env, branch, reason):
    env = any_db_env
    before = snapshot(env)
    with pytest.raises(LfopsError, match=r"^branch: ") as info:
        env.ws.changes.save(
            env.actor("alice"), env.example_yaml().replace(b"seed: 42", b"seed: 7"), "ok", "msg", branch
        )
    assert reason in str(info.value) and "\n" not in str(info.value).rstrip("\n").replace(repr(branch), "")
    assert info.value.field == "branch"
    assert snapshot(env) == before


def test_the_longest_branch_allowed_works_on_both_databases(any_db_env):
    env = any_db_env
    branch = "/".join(["x" * 99] * 2) + "/" + "y" * (BRANCH_MAX - 200)
    assert len(branch) == BRANCH_MAX
    result = env.ws.changes.save(
        env.actor("alice"), env.example_yaml().replace(b"seed: 42", b"seed: 8"), "long", "m", branch
    )
    assert env.ws.changes.get(env.actor("alice"), result.change_request).branch == branch


@pytest.mark.parametrize("name", ["rank\n", "rank16\r", "x" * 101, "HEAD/x"])
def test_bad_config_names_are_refused(env, name):
    before = snapshot(env)
    with pytest.raises(LfopsError, match=r"^name: "):
        env.ws.changes.save(env.actor("alice"), env.example_yaml(), name, "msg")
    assert snapshot(env) == before


def test_the_rule_is_gits_own_within_our_characters():
    for good in ("alice/rank-16", "team.a/x_y", "a/b/c"):
        assert check_branch(good, main="main") == good
    for bad in ("a//b", "a/", "/a", "-x", "a..b", "a/.b", "a.", "a b", "a~1", "a^1", "a:b", "a?", "a*", "a[b", "a\\b"):
        with pytest.raises(LfopsError):
            check_branch(bad, main="main")
    assert check_name("rank16") == "rank16"
    assert len(f"configs/{'x' * NAME_MAX}.yaml") <= CONFIG_PATH_MAX  # the longest name's path fits its columns


def test_the_main_branch_setting_follows_the_same_rule(monkeypatch, tmp_path):
    for bad in ("HEAD", "refs/heads/main", "main\n"):
        monkeypatch.setenv("LFOPS_MAIN_BRANCH", bad)
        with pytest.raises(SettingsError, match="^LFOPS_MAIN_BRANCH: "):
            Settings.from_env(tmp_path)
    monkeypatch.setenv("LFOPS_MAIN_BRANCH", "trunk")
    assert Settings.from_env(tmp_path).main_branch == "trunk"


@pytest.mark.parametrize("number", [99999999999999999999, ID_MAX + 1, 2**63, 0, -1])
def test_ids_out_of_range_are_no_such_change_request(any_db_env, number):
    env = any_db_env
    rita, alice = env.actor("rita"), env.actor("alice")
    before = snapshot(env)
    calls = [
        lambda: env.ws.changes.get(rita, number),
        lambda: env.ws.changes.show(rita, number),
        lambda: env.ws.changes.approve(rita, number),
        lambda: env.ws.changes.request_changes(rita, number, "no"),
        lambda: env.ws.changes.merge(rita, number),
        lambda: env.ws.changes.close(alice, number),
    ]
    for call in calls:
        with pytest.raises(NotFound, match=rf"^change request #{number} does not exist$"):
            call()
    assert snapshot(env) == before


def test_the_cli_answers_an_id_out_of_range_in_one_line(any_db_env, capsys, monkeypatch):
    env = any_db_env
    monkeypatch.setenv("LFOPS_DATABASE_URL", env.ws.settings.database_url)
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["rita"])
    code = main(
        ["--workspace", str(env.ws.settings.workspace), "--user", "rita", "review", "show", "99999999999999999999"]
    )
    assert code == 2
    assert capsys.readouterr().err == "error: change request #99999999999999999999 does not exist\n"
