"""No part of a password is ever shown (backend.redaction): however malformed the URL, in the store's, Git's and the
settings' messages."""

from __future__ import annotations

import pytest

from backend.errors import GitFailure, SettingsError, StoreUnavailable
from backend.gitstore import GitStore
from backend.redaction import redact, redact_url
from backend.settings import Settings
from backend.store import Store

# Each part of this password is distinctive, so a test can tell that no piece of it leaked.
PASSWORD = "Zq@Xv:Jk/Wy"
PIECES = ["Zq", "Xv", "Jk", "Wy", "ZqXvJkWy"]


def leaked(text: str) -> list[str]:
    return [piece for piece in PIECES if piece in text]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql+psycopg://trainer:{PASSWORD}@db.example.com:5432/lfops", "postgresql+psycopg://trainer:***@db"),
        (f"trainer:{PASSWORD}@db.example.com/lfops", "trainer:***@db.example.com/lfops"),  # no scheme
        ("postgresql://trainer:Zq%40Xv%3AJk%2FWy@db/lfops", "postgresql://trainer:***@db/lfops"),  # percent-encoded
        (f"https://trainer@corp:{PASSWORD}@git.example.com/r.git", "https://***:***@git.example.com/r.git"),
        ("postgresql://trainer:Zq Xv@db/lfops", "postgresql://trainer:***@db/lfops"),  # a space
        ("postgresql://trainer:ZqXvJkWy@db/lfops?sslmode=require", "postgresql://trainer:***@db/lfops?sslmode=require"),
        ("postgresql://db/lfops?user=trainer&password=ZqXvJkWy", "postgresql://db/lfops?user=trainer&password=***"),
        ("https://ghp_" + "ZqXvJkWy" * 4 + "1234@github.com/o/r.git", "https://***@github.com/o/r.git"),
        (":ZqXvJkWy@db/lfops", ":***@db/lfops"),
        ("postgresql://Zq@Xv@Jk@Wy@db/lfops", "postgresql://***@db/lfops"),  # several @, no colon at all
    ],
)
def test_no_part_of_a_password_is_shown_however_the_url_is_written(url, shown):
    redacted = redact_url(url)
    assert redacted.startswith(shown) and not leaked(redacted), redacted


@pytest.mark.parametrize(
    "url", ["postgresql://trainer@db/lfops", "sqlite:////tmp/lfops.db", "/srv/origin.git", "git@github.com:o/r.git"]
)
def test_urls_without_credentials_are_shown_as_they_are(url):
    assert redact_url(url) == url


def test_a_text_is_cleaned_of_urls_tokens_and_the_known_passwords_spellings():
    url = f"http://trainer:{PASSWORD}@127.0.0.1:1/r.git"
    # what git itself printed for that URL: it took `Xv:Jk/Wy` for the user and password
    git_said = "fatal: unable to access 'http://Xv:Jk/Wy@127.0.0.1:1/r.git/': URL using bad/illegal format"
    assert not leaked(redact(git_said, url))
    said = "To https://bob:ZqXvJkWy@git.example.com/r.git by alice <alice@lfops.local> at HEAD@{1}"
    assert redact(said) == "To https://bob:***@git.example.com/r.git by alice <alice@lfops.local> at HEAD@{1}"
    token = "hf_" + "ZqXvJkWyAbCdEfGhIjKlMnOpQrStUv12"
    assert redact(f"push failed for {token}") == "push failed for ***"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://trainer:{PASSWORD}@127.0.0.1:1/lfops",  # the tail of the password taken for the host
        "postgresql+psycopg://trainer:Zq@Xv@127.0.0.1:1/lfops",
        "trainer:ZqXvJkWy@127.0.0.1:1/lfops",  # no scheme: SQLAlchemy quoted it whole
        "postgresql+psycopg://trainer:ZqXvJkWy@127.0.0.1:1/lfops",
        "postgresql+psycopg://trainer:Zq%40Xv@127.0.0.1:1/lfops",
    ],
)
def test_the_stores_errors_show_no_part_of_the_password(url):
    with pytest.raises(StoreUnavailable) as info:
        Store(url).check()
    assert not leaked(str(info.value)), str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_a_password_with_an_unencoded_at_is_refused_with_the_fix():
    with pytest.raises(StoreUnavailable, match="more than one unencoded '@'.*%40"):
        Store(f"postgresql+psycopg://trainer:{PASSWORD}@127.0.0.1:1/lfops")


@pytest.mark.parametrize("variable", ["LFOPS_DATABASE_URL", "LFOPS_REPO_URL"])
def test_settings_refuse_an_ambiguous_url_without_showing_it(monkeypatch, tmp_path, variable):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, f"postgresql+psycopg://trainer:{PASSWORD}@db.example.com/lfops")
    with pytest.raises(SettingsError) as info:
        Settings.from_env(tmp_path / "ws")
    assert str(info.value).startswith(f"{variable}: it holds more than one unencoded '@'")
    assert info.value.field == variable and not leaked(str(info.value))


@pytest.mark.parametrize(
    "remote",
    [f"http://trainer:{PASSWORD}@127.0.0.1:1/r.git", "http://trainer:ZqXvJkWy@127.0.0.1:1/r.git"],
)
def test_git_errors_show_no_part_of_the_remotes_password(tmp_path, remote):
    store = GitStore(tmp_path / "mirror.git", remote)
    store.ensure_mirror()
    with pytest.raises(GitFailure) as info:
        store.fetch()
    assert "127.0.0.1" in str(info.value) and not leaked(str(info.value)), str(info.value)
