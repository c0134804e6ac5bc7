"""Pull requests on a forge (Gitea, GitHub, GitLab) or none: lfops' own change requests, as without a forge.

`make_forge(kind, ...)` is the one place a forge is chosen; everything else talks to `Forge`."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import httpx

from backend.errors import SettingsError
from backend.forge.base import (
    EVENT_KINDS,
    MERGE_STYLES,
    PR_STATES,
    REVIEW_STATES,
    STATUS_CONTEXT,
    STATUS_STATES,
    CommitStatus,
    Forge,
    ForgeUnavailable,
    PullRequest,
    Push,
    Review,
    WebhookEvent,
)
from backend.forge.gitea import GiteaForge
from backend.forge.github import GitHubForge
from backend.forge.gitlab import GitLabForge

FORGE_KINDS = ("none", "gitea", "github", "gitlab")
_CLASSES: dict[str, type[Forge]] = {"gitea": GiteaForge, "github": GitHubForge, "gitlab": GitLabForge}

__all__ = [
    "EVENT_KINDS",
    "FORGE_KINDS",
    "MERGE_STYLES",
    "PR_STATES",
    "REVIEW_STATES",
    "STATUS_CONTEXT",
    "STATUS_STATES",
    "CommitStatus",
    "Forge",
    "ForgeUnavailable",
    "GitHubForge",
    "GitLabForge",
    "GiteaForge",
    "PullRequest",
    "Push",
    "Review",
    "WebhookEvent",
    "git_auth_env",
    "make_forge",
]


def make_forge(
    kind: str,
    base_url: str = "",
    repo: str = "",
    token: str = "",
    webhook_secret: str = "",
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> Forge | None:
    """The configured forge, or None for "none" (lfops' own change requests). `transport` is for tests' fake servers.

    Field names in errors are the settings' names (LFOPS_FORGE, LFOPS_FORGE_URL, ...), as the user sets them."""
    kind = (kind or "none").strip().lower()
    if kind not in FORGE_KINDS:
        raise SettingsError(f"LFOPS_FORGE: {kind!r} is not one of {', '.join(FORGE_KINDS)}", field="LFOPS_FORGE")
    if kind == "none":
        return None
    url = (base_url or "").strip()
    if kind == "github" and not url:
        url = "https://github.com"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"LFOPS_FORGE_URL: {url!r} is not an http(s) URL", field="LFOPS_FORGE_URL")
    if parts.username or parts.password:
        raise SettingsError(
            "LFOPS_FORGE_URL: must not carry credentials; set LFOPS_FORGE_TOKEN", field="LFOPS_FORGE_URL"
        )
    if not repo:
        raise SettingsError(f"LFOPS_FORGE_REPO: required when LFOPS_FORGE={kind}", field="LFOPS_FORGE_REPO")
    if not token:
        raise SettingsError(f"LFOPS_FORGE_TOKEN: required when LFOPS_FORGE={kind}", field="LFOPS_FORGE_TOKEN")
    return _CLASSES[kind](url, repo, token, webhook_secret, timeout=timeout, transport=transport)


def git_auth_env(kind: str, token: str) -> dict[str, str]:
    """Variables that make `git push`/`fetch` send the forge token as an HTTP header: the token is never on a command
    line, in a remote URL or in a git config file."""
    if kind == "none" or not token:
        return {}
    if kind == "github":
        header = "Authorization: Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    elif kind == "gitlab":
        header = "Authorization: Basic " + base64.b64encode(f"oauth2:{token}".encode()).decode()
    else:
        header = f"Authorization: token {token}"
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": header}
