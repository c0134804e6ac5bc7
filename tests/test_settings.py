"""Typed settings: every `LFOPS_*` value and cluster-profile field is checked at start, a bad one is one line."""

from __future__ import annotations

import json
import os

import pytest

from backend.errors import SettingsError
from backend.settings import ClusterProfile, Settings, parse_cluster_profiles
from tests.helpers import run_lfops


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No `LFOPS_*` from the caller, no `.env` or /run/secrets of this machine: each test sets what it reads."""
    for name in list(os.environ):
        if name.startswith("LFOPS_") and not name.startswith("LFOPS_TEST_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "no-secrets"
    empty.mkdir()
    monkeypatch.setenv("LFOPS_SECRETS_DIR", str(empty))
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def profiles(**spec) -> str:
    return json.dumps({"gpu8": spec})


def test_defaults_live_in_the_workspace(clean_env, tmp_path):
    settings = Settings.from_env(tmp_path / "ws")
    assert settings.workspace == (tmp_path / "ws").resolve()
    assert settings.database_url == f"sqlite:///{settings.workspace / 'lfops.db'}"
    assert settings.repo_url == str(settings.workspace / "origin.git")
    assert (settings.runner, settings.main_branch, settings.cluster_profiles) == ("local", "main", {})
    assert settings.mirror_dir == settings.workspace / "mirror.git"
    clean_env.setenv("LFOPS_WORKSPACE", str(tmp_path / "other"))
    clean_env.setenv("LFOPS_DATABASE_URL", "")  # empty means unset, as before
    assert Settings.from_env().workspace == (tmp_path / "other").resolve()
    assert Settings.from_env().database_url.endswith("/other/lfops.db")


def test_numeric_strings_are_numbers_and_every_field_is_typed(clean_env):
    clean_env.setenv("LFOPS_CLUSTER_PROFILES", profiles(gpus_per_node="8", active_deadline_seconds="3600"))
    profile = Settings.from_env().cluster_profiles["gpu8"]
    assert isinstance(profile, ClusterProfile)
    assert (profile.name, profile.gpus_per_node, profile.active_deadline_seconds) == ("gpu8", 8, 3600)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"gpus_per_node": "eight"}, "LFOPS_CLUSTER_PROFILES.gpu8.gpus_per_node: must be an integer >= 0, got 'eight'"),
        ({"gpus_per_node": -1}, "LFOPS_CLUSTER_PROFILES.gpu8.gpus_per_node: must be an integer >= 0, got -1"),
        (
            {"active_deadline_seconds": "7d"},
            "LFOPS_CLUSTER_PROFILES.gpu8.active_deadline_seconds: must be an integer >= 1, got '7d'",
        ),
        ({"master_port": 70000}, "LFOPS_CLUSTER_PROFILES.gpu8.master_port: must be an integer from 1 to 65535, got"),
        ({"namespace": 5}, "LFOPS_CLUSTER_PROFILES.gpu8.namespace: must be a string, got 5"),
        (
            {"node_selector": {"gpu": 1}},
            "LFOPS_CLUSTER_PROFILES.gpu8.node_selector: must be an object of string values",
        ),
        ({"tolerations": {"key": "x"}}, "LFOPS_CLUSTER_PROFILES.gpu8.tolerations: must be a list of objects"),
        ({"gpus": 8}, "LFOPS_CLUSTER_PROFILES.gpu8: unknown field 'gpus'"),
    ],
)
def test_a_bad_profile_field_is_one_line_naming_profile_and_field(clean_env, spec, message):
    with pytest.raises(SettingsError) as info:
        parse_cluster_profiles(profiles(**spec))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert info.value.field.startswith("LFOPS_CLUSTER_PROFILES.gpu8")
    clean_env.setenv("LFOPS_CLUSTER_PROFILES", profiles(**spec))
    with pytest.raises(SettingsError, match=f"^{message[:40]}"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LFOPS_RUNNER", "slurm", "LFOPS_RUNNER: must be one of 'local', 'kubernetes', got 'slurm'"),
        ("LFOPS_MAIN_BRANCH", "a..b", "LFOPS_MAIN_BRANCH: 'a..b' is not allowed"),
        ("LFOPS_TRUSTED_USER_HEADER", "X User", "LFOPS_TRUSTED_USER_HEADER: 'X User' is not an HTTP header name"),
        ("LFOPS_HUB_REPO", "just-a-name", "LFOPS_HUB_REPO: 'just-a-name' must be OWNER/NAME"),
        ("LFOPS_DATABASE_URL", "postgresql://app:hunter2@db:port/x", "LFOPS_DATABASE_URL: not a database URL"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(clean_env, name, value, message):
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        Settings.from_env()
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert info.value.field == name and "hunter2" not in str(info.value)


def test_dotenv_and_secrets_directory_are_read_environment_first(clean_env, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "LFOPS_DATABASE_URL").write_text("postgresql+psycopg://app:hunter2@db/lfops\n")
    (secrets / "LFOPS_HUB_REPO").write_text("from/secrets\n")
    (tmp_path / ".env").write_text("LFOPS_RUNNER=kubernetes\nLFOPS_HUB_REPO=from/dotenv\nLFOPS_USER=alice\n")
    clean_env.setenv("LFOPS_SECRETS_DIR", str(secrets))
    settings = Settings.from_env(tmp_path / "ws")
    assert settings.database_url == "postgresql+psycopg://app:hunter2@db/lfops"
    assert (settings.runner, settings.hub_repo) == ("kubernetes", "from/dotenv")  # .env before the secrets dir
    assert "hunter2" not in repr(settings)
    clean_env.setenv("LFOPS_HUB_REPO", "from/env")
    assert Settings.from_env(tmp_path / "ws").hub_repo == "from/env"  # the environment before both
    clean_env.setenv("LFOPS_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="^LFOPS_SECRETS_DIR: .* is not a directory$"):
        Settings.from_env()


def test_constructing_settings_reads_nothing_and_copies_keep_profiles(clean_env, tmp_path):
    clean_env.setenv("LFOPS_RUNNER", "kubernetes")
    built = Settings(workspace=tmp_path, database_url="sqlite:///x.db")
    assert built.runner == "local" and built.repo_url == str(tmp_path.resolve() / "origin.git")
    profile = ClusterProfile(name="a100", gpus_per_node=8)
    with_profile = built.model_copy(update={"cluster_profiles": {"a100": profile}})
    again = Settings(**with_profile.__dict__)
    assert again.cluster_profiles["a100"] is profile and again == with_profile


def test_the_cli_prints_one_line_and_no_traceback(tmp_path):
    env = {"LFOPS_CLUSTER_PROFILES": profiles(active_deadline_seconds="one week")}
    proc = run_lfops("cluster", "profiles", workspace=tmp_path / "ws", env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: LFOPS_CLUSTER_PROFILES.gpu8.active_deadline_seconds: must be an integer >= 1, got 'one week'\n"
    )
