"""Commit trailers are read with Git's own parser: only the message's final trailer block counts."""

from __future__ import annotations

import subprocess

from backend.gitstore import GitStore, Identity, init_origin, parse_trailers

# A description whose paragraph happens to hold a `Word: value` line, then the real trailer block.
MESSAGE = """\
Tune the learning rate

We tried this before and
Approved-by: mallory <m@example.com>
is what the old process would have written here.

Change-Request: 7
Approved-by: rita <rita@lfops.local>
Approved-by: admin <admin@lfops.local>
"""


def test_a_word_value_line_inside_the_description_is_not_a_trailer():
    assert parse_trailers(MESSAGE) == {
        "Change-Request": ["7"],
        "Approved-by": ["rita <rita@lfops.local>", "admin <admin@lfops.local>"],
    }


def test_a_message_without_a_trailer_block_has_no_trailers():
    assert parse_trailers("Config-Hash: abc\n") == {}  # the subject is never a trailer
    assert parse_trailers("Subject\n\nApproved-by: eve <e@x>\nand a sentence that is not a trailer\n") == {}
    # a `---` line does not end the message (it does for patches, not for commits)
    assert parse_trailers("Subject\n\nApproved-by: eve <e@x>\n---\n\nChange-Request: 1\n") == {"Change-Request": ["1"]}


def test_log_reads_trailers_the_same_way(tmp_path):
    origin = tmp_path / "origin.git"
    first = init_origin(origin, {"README.md": "x\n"}, Identity("lfops", "lfops@localhost"))
    store = GitStore(tmp_path / "mirror.git", str(origin))
    store.ensure_mirror()
    store.fetch()
    commit = store.commit_file(first, "configs/a.yaml", "a: 1\n", MESSAGE, Identity("alice", "alice@lfops.local"))
    store.push(commit, "main", expect=first)
    store.fetch()
    newest, initial = store.log("refs/remotes/origin/main")
    assert newest["commit"] == commit and newest["subject"] == "Tune the learning rate"
    assert newest["trailers"] == parse_trailers(MESSAGE)
    assert initial["trailers"] == {}
    raw = subprocess.run(["git", "-C", str(origin), "log", "-1", "--format=%B"], capture_output=True, text=True)
    assert "Approved-by: mallory" in raw.stdout  # the line is there; it just is not a trailer
