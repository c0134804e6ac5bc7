"""LFOPS_FORGE* settings: checked at start, one line naming the variable, secrets never echoed or shown."""

from __future__ import annotations

import pytest

from backend.errors import SettingsError
from backend.settings import Settings

GOOD = {
    "LFOPS_FORGE": "gitea",
    "LFOPS_FORGE_URL": "https://gitea.example",
    "LFOPS_FORGE_REPO": "team/configs",
    "LFOPS_FORGE_TOKEN": "s3cret-token",
    "LFOPS_FORGE_WEBHOOK_SECRET": "hook-s3cret",
}


def _load(monkeypatch, tmp_path, **values: str) -> Settings:
    for name in [*GOOD, "LFOPS_FORGE_USER_MAP", "LFOPS_FORGE_TIMEOUT", "LFOPS_PUBLIC_URL", "LFOPS_SECRETS_DIR"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env from elsewhere
    return Settings.from_env(tmp_path / "ws")


def test_no_forge_is_the_default(monkeypatch, tmp_path):
    settings = _load(monkeypatch, tmp_path)
    assert (settings.forge, settings.forge_user_map, settings.forge_merge_style) == ("none", {}, "merge")


def test_a_complete_forge_loads_and_hides_its_secrets(monkeypatch, tmp_path):
    settings = _load(
        monkeypatch, tmp_path, **GOOD, LFOPS_FORGE_USER_MAP='{"rita-gh": "rita"}', LFOPS_PUBLIC_URL="https://lfops.x/"
    )
    assert (settings.forge, settings.forge_repo, settings.forge_user_map) == (
        "gitea",
        "team/configs",
        {"rita-gh": "rita"},
    )
    assert settings.public_url == "https://lfops.x"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_the_token_can_come_from_the_secrets_directory(monkeypatch, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "LFOPS_FORGE_TOKEN").write_text("from-a-file")
    values = {k: v for k, v in GOOD.items() if k != "LFOPS_FORGE_TOKEN"}
    settings = _load(monkeypatch, tmp_path, **values, LFOPS_SECRETS_DIR=str(secrets))
    assert settings.forge_token == "from-a-file"


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"LFOPS_FORGE": "bitbucket"}, "LFOPS_FORGE", "must be one of 'none', 'gitea', 'github', 'gitlab'"),
        ({"LFOPS_FORGE_URL": ""}, "LFOPS_FORGE_URL", "required when LFOPS_FORGE=gitea"),
        ({"LFOPS_FORGE_TOKEN": ""}, "LFOPS_FORGE_TOKEN", "required when LFOPS_FORGE=gitea"),
        ({"LFOPS_FORGE_REPO": "configs"}, "LFOPS_FORGE_REPO", "is not 'owner/name'"),
        ({"LFOPS_FORGE_URL": "ftp://gitea.example"}, "LFOPS_FORGE_URL", "is not an http(s) URL"),
        ({"LFOPS_FORGE_URL": "https://bot:pw@gitea.example"}, "LFOPS_FORGE_URL", "must not carry credentials"),
        ({"LFOPS_FORGE_USER_MAP": "{rita"}, "LFOPS_FORGE_USER_MAP", "not valid JSON"),
        ({"LFOPS_FORGE_USER_MAP": '{"rita": 1}'}, "LFOPS_FORGE_USER_MAP", "must be a JSON object"),
        ({"LFOPS_FORGE_TIMEOUT": "0"}, "LFOPS_FORGE_TIMEOUT", "must be a number from 0.1 to 600"),
        ({"LFOPS_FORGE_MERGE_STYLE": "octopus"}, "LFOPS_FORGE_MERGE_STYLE", "must be one of"),
    ],
)
def test_bad_forge_settings_are_one_line_naming_the_variable(monkeypatch, tmp_path, values, field, message):
    with pytest.raises(SettingsError) as caught:
        _load(monkeypatch, tmp_path, **{**GOOD, **values})
    error = str(caught.value)
    assert caught.value.field == field and error.startswith(f"{field}: ") and message in error
    assert "\n" not in error and "s3cret" not in error


def test_a_github_forge_defaults_its_url(monkeypatch, tmp_path):
    values = {**GOOD, "LFOPS_FORGE": "github", "LFOPS_FORGE_URL": ""}
    assert _load(monkeypatch, tmp_path, **values).forge == "github"
