"""One Settings object for the whole app, read once at start and checked there.

`Settings.from_env()` reads the `LFOPS_*` variables from the environment, then a `.env` file in the current
directory, then a secrets directory (`LFOPS_SECRETS_DIR`, else `/run/secrets` when it exists: one file per variable,
named like it, e.g. `/run/secrets/LFOPS_DATABASE_URL`), in that order of precedence. Every value is typed; a bad one
is a SettingsError of one line naming the variable (or the cluster profile and field) and why. Constructing
`Settings(...)` directly reads nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from annotated_types import Ge, Interval
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from backend.errors import SettingsError
from backend.redaction import AMBIGUOUS_AT, password_is_ambiguous, redact

ENV_PREFIX = "LFOPS_"
DEFAULT_SECRETS_DIR = Path("/run/secrets")
RunnerName = Literal["local", "kubernetes"]
RUNNERS: tuple[str, ...] = get_args(RunnerName)
ForgeName = Literal["none", "gitea", "github", "gitlab"]  # none: lfops' own change requests only (the default)
_LOGIN = re.compile(r"[A-Za-z0-9][\w.@-]*")  # a forge login (Gitea, GitHub, GitLab usernames)
HUB_REPO_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # a Hugging Face Hub repo id: OWNER/NAME
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110 token)

Count = Annotated[int, Ge(0)]
GiB = Annotated[float, Ge(0)]
# CUDA compute capabilities of data-centre and workstation GPUs: V100 7.0, T4 7.5, A100 8.0, A10/RTX 30xx 8.6,
# L4/L40/RTX 40xx 8.9, H100/H200 9.0, B200 10.0, RTX 50xx 12.0 ("" = not said; the preflight then assumes)
ComputeCapability = Literal["", "7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.9", "9.0", "10.0", "10.3", "12.0"]
Positive = Annotated[int, Ge(1)]
Port = Annotated[int, Interval(ge=1, le=65535)]


@dataclass(frozen=True)
class ClusterProfile:
    """Where and how training Jobs run on a Kubernetes cluster (see backend.runners.kubernetes).

    The annotations are the types LFOPS_CLUSTER_PROFILES is checked against (numeric strings such as "8" are
    taken as numbers). Constructing one in code checks nothing; what only Kubernetes can judge (names, label
    values) is checked by backend.runners.k8s_manifests.check_profile.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    name: str
    namespace: str = "lfops"
    image: str = "ghcr.io/lfops/train:0.9.5"
    gpus_per_node: Count = 1
    # What the nodes' GPUs are, for the launch preflight (backend.preflight): memory per GPU (0 = not said) and
    # compute capability (bf16 and FlashAttention-2 need 8.0, fp8 8.9); gpu_model is only shown.
    gpu_model: str = ""
    gpu_memory_gib: GiB = 0.0
    gpu_compute_capability: ComputeCapability = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    priority_class: str = ""
    outputs_pvc: str = "lfops-outputs"
    hub_token_secret: str = ""  # name of a Secret with key HF_TOKEN; the token itself never passes through lfops
    kueue_queue: str = ""
    active_deadline_seconds: Positive = 7 * 24 * 3600
    backoff_limit: Count = 0
    ttl_seconds_after_finished: Positive = 7 * 24 * 3600
    master_port: Port = 29500  # torchrun rendezvous port on pod 0 of a multi-node run
    service_account: str = ""  # for the training pods (they get no API token either way)
    image_pull_secret: str = ""
    pod_labels: dict[str, str] = field(default_factory=dict)  # extra labels/annotations on training pods
    pod_annotations: dict[str, str] = field(default_factory=dict)
    outputs_mount: str = ""  # where this app sees outputs_pvc (e.g. /outputs in its own pod); "" = not readable here
    clone_image: str = ""  # an image with git: clone the config repo at the run's commit (for dataset_dir: data)
    repo_credentials_secret: str = ""  # Secret with key .git-credentials for cloning a private config repo
    # Per training pod, as Kubernetes quantities ("" = none); a run's own cpu/memory request overrides the requests.
    cpu_request: str = ""
    memory_request: str = ""
    cpu_limit: str = ""
    memory_limit: str = ""  # "" = the memory request (a pod that outgrows it is OOMKilled, not its neighbours)
    run_as_user: Positive = 10001  # uid, gid and fsGroup of training pods (non-root: Pod Security "restricted")
    serving: dict[str, Any] = field(default_factory=dict)  # deployments: ServingTarget fields (backend.serving)


_PROFILE = TypeAdapter(ClusterProfile)


def parse_cluster_profiles(raw: str) -> dict[str, ClusterProfile]:
    """LFOPS_CLUSTER_PROFILES: a JSON object of name -> ClusterProfile fields; one-line errors name the profile."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"LFOPS_CLUSTER_PROFILES: not valid JSON ({exc})", field="LFOPS_CLUSTER_PROFILES") from None
    return _profiles(doc)


def _profiles(doc: object) -> dict[str, ClusterProfile]:
    where = "LFOPS_CLUSTER_PROFILES"
    if not isinstance(doc, dict) or not all(isinstance(v, dict | ClusterProfile) for v in doc.values()):
        raise SettingsError(f"{where}: must be a JSON object of profile name -> {{field: value}}", field=where)
    known = {f.name for f in fields(ClusterProfile)} - {"name"}
    hints = get_type_hints(ClusterProfile, include_extras=True)
    profiles = {}
    for name, spec in doc.items():
        if isinstance(spec, ClusterProfile):  # built in code: taken as it is
            profiles[name] = spec
            continue
        unknown = sorted(set(spec) - known)
        if unknown:
            raise SettingsError(f"{where}.{name}: unknown field {unknown[0]!r}", field=f"{where}.{name}")
        try:
            profiles[name] = _PROFILE.validate_python({**spec, "name": name})
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            attr = str(error["loc"][0])
            raise _one_line(f"{where}.{name}.{attr}", error, hints[attr], spec.get(attr)) from None
    return profiles


class Settings(BaseModel):
    """The app's settings; attribute `x` is variable `LFOPS_X`. Paths below the workspace are properties."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Path = Field(default_factory=lambda: Path.cwd() / ".lfops")
    database_url: str = Field("", repr=False)  # default: SQLite in the workspace; may hold a password
    repo_url: str = Field("", repr=False)  # default: the bare repository `lfops init` makes; may hold a token
    runner: RunnerName = "local"
    main_branch: str = "main"
    kubeconfig: str = ""
    cluster_profiles: Annotated[dict[str, ClusterProfile], NoDecode] = Field(default_factory=dict)
    trusted_user_header: str = ""  # e.g. X-Forwarded-User when behind oauth2-proxy
    hub_repo: str = ""  # optional Hugging Face Hub repo for registry pushes
    ci_install: str = ""  # pip requirement pinning the lfops the config repo's CI installs ("" = vendor a wheel)
    log_format: Literal["text", "json"] = "text"  # json: one object a line, for a log shipper (backend.logconfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    admin_password: str = Field("", repr=False)  # the first admin's, for `init` (e.g. a Secret file); never printed
    retrain_cooldown_hours: int = Field(24, ge=0)  # after a retrain request of a model is merged (backend.retrain)
    retrain_hourly_limit: int = Field(5, ge=1)  # retrain requests the bot opens per hour, all models together
    # encrypts notification targets' secrets in the database (Fernet key; "" = a key file in the workspace)
    notify_key: str = Field("", repr=False)
    # Pull requests on a forge (docs/forge.md); the token and the webhook secret are never stored or logged.
    forge: ForgeName = "none"
    forge_url: str = ""  # the forge's web root; github defaults to https://github.com
    forge_repo: str = ""  # owner/name (GitLab: group/sub/project): the repository LFOPS_REPO_URL points at
    forge_token: str = Field("", repr=False)  # the bot's token
    forge_webhook_secret: str = Field("", repr=False)
    forge_user_map: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)  # forge login -> lfops user
    forge_timeout: Annotated[float, Interval(ge=0.1, le=600)] = 10.0
    forge_merge_style: Literal["merge", "squash", "rebase"] = "merge"
    forge_reconcile_seconds: Positive = 300
    public_url: str = ""  # where people open lfops (links from pull requests back to it)

    @model_validator(mode="before")
    @classmethod
    def _workspace_defaults(cls, values: Any) -> Any:
        """The workspace is absolute; the database and the config repository default to files inside it."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        ws = Path(values.get("workspace") or Path.cwd() / ".lfops").expanduser().resolve()
        values["workspace"] = ws
        values["database_url"] = values.get("database_url") or f"sqlite:///{ws / 'lfops.db'}"
        values["repo_url"] = values.get("repo_url") or str(ws / "origin.git")
        return values

    @field_validator("cluster_profiles", mode="before")
    @classmethod
    def _parse_profiles(cls, value: Any) -> Any:
        return parse_cluster_profiles(value) if isinstance(value, str) else _profiles(value)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if password_is_ambiguous(value):  # SQLAlchemy would take the password's tail for the host, and show it
            raise ValueError(AMBIGUOUS_AT)
        try:
            make_url(value)
        except (ArgumentError, ValueError):
            # never the value itself: it may hold a password
            raise ValueError("not a database URL (e.g. postgresql+psycopg://USER:PASSWORD@HOST/DB)") from None
        return value

    @field_validator("repo_url")
    @classmethod
    def _repo_url(cls, value: str) -> str:
        if password_is_ambiguous(value):  # Git would take the password's tail for the user, and show it
            raise ValueError(AMBIGUOUS_AT)
        return value

    @field_validator("main_branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        from backend.errors import LfopsError
        from backend.gitstore import check_branch

        try:
            return check_branch(value)
        except LfopsError as exc:
            raise ValueError(str(exc).removeprefix("branch: ")) from None

    @field_validator("trusted_user_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if value and not _HEADER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    @field_validator("hub_repo")
    @classmethod
    def _hub_repo(cls, value: str) -> str:
        if value and not HUB_REPO_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} must be OWNER/NAME")
        return value

    @field_validator("forge_user_map", mode="before")
    @classmethod
    def _user_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError('not valid JSON; expected {"forge-login": "lfops-user"}') from None
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ValueError('must be a JSON object {"forge-login": "lfops-user"}')
        for login in value:
            if not _LOGIN.fullmatch(login):
                raise ValueError(f"{login!r} is not a forge login")
        return value

    @field_validator("forge_url", "public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _forge_complete(self) -> Settings:
        check_forge(self)
        return self

    @property
    def mirror_dir(self) -> Path:
        """lfops' own bare clone of the config repo; every operation goes through it under a lock."""
        return self.workspace / "mirror.git"

    @property
    def runs_dir(self) -> Path:
        return self.workspace / "runs"

    @property
    def registry_dir(self) -> Path:
        return self.workspace / "registry"

    @property
    def models_dir(self) -> Path:
        return self.workspace / "models"

    @classmethod
    def from_env(cls, workspace: str | os.PathLike | None = None) -> Settings:
        """The settings from `LFOPS_*` (environment, `.env`, secrets directory); `workspace` overrides
        LFOPS_WORKSPACE. A bad value raises SettingsError naming it."""
        secrets_dir = _secrets_dir()
        given = {"workspace": workspace} if workspace else {}
        try:
            loaded = _FromEnvironment(_secrets_dir=secrets_dir, **given)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            attr = str(error["loc"][0]) if error["loc"] else ""
            info = cls.model_fields.get(attr)
            if info is None:
                raise SettingsError(redact(f"settings: {error['msg']}")) from None
            value = error.get("input") if len(error["loc"]) == 1 else None
            hint = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            raise _one_line(ENV_PREFIX + attr.upper(), error, hint, value) from None
        except SourceError as exc:
            raise SettingsError(redact(f"settings: {str(exc).splitlines()[0]}")) from None
        settings = cls.model_construct(**{name: getattr(loaded, name) for name in cls.model_fields})
        check_forge(settings)
        return settings


def check_forge(settings: Settings) -> None:
    """With a forge chosen, its URL (not for github), repository and token are required; SettingsError names which."""
    kind = settings.forge
    if kind == "none":
        return
    missing = [
        name
        for name, value in (
            ("LFOPS_FORGE_URL", settings.forge_url or (kind == "github")),
            ("LFOPS_FORGE_REPO", settings.forge_repo),
            ("LFOPS_FORGE_TOKEN", settings.forge_token),
        )
        if not value
    ]
    if missing:
        raise SettingsError(f"{missing[0]}: required when LFOPS_FORGE={kind}", field=missing[0])
    parts = settings.forge_repo.split("/")
    if len(parts) < 2 or not all(parts) or (kind != "gitlab" and len(parts) != 2):
        shape = "group/project" if kind == "gitlab" else "owner/name"
        raise SettingsError(f"LFOPS_FORGE_REPO: {settings.forge_repo!r} is not {shape!r}", field="LFOPS_FORGE_REPO")


class _FromEnvironment(BaseSettings, Settings):
    """Settings with the sources of `from_env`; other `LFOPS_*` names (LFOPS_USER, ...) belong to others."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True
    )


def _secrets_dir() -> Path | None:
    named = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR", "")
    if named:
        if not Path(named).is_dir():
            raise SettingsError(f"{ENV_PREFIX}SECRETS_DIR: {named!r} is not a directory", field="LFOPS_SECRETS_DIR")
        return Path(named)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


# ---- one line per bad value ---------------------------------------------------------------------------------------

# Values never echoed in a message: they may hold credentials.
_SECRET = {
    "LFOPS_DATABASE_URL",
    "LFOPS_REPO_URL",
    "LFOPS_ADMIN_PASSWORD",
    "LFOPS_FORGE_TOKEN",
    "LFOPS_FORGE_WEBHOOK_SECRET",
}


def _one_line(where: str, error: dict, hint: Any, value: object) -> SettingsError:
    """`WHERE: must be <what the type says>, got <value>`, or the validator's own reason."""
    if error["type"] in ("value_error", "assertion_error"):
        reason = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        reason = f"must be {_expected(hint)}"
        if where not in _SECRET:
            reason += redact(f", got {value if value is not None else error.get('input')!r}")
    return SettingsError(f"{where}: {reason}", field=where)


def _expected(hint: Any) -> str:
    """What a type annotation accepts, in words ("an integer >= 1", "an object of string values")."""
    if get_origin(hint) is Annotated:
        base, *meta = get_args(hint)
        bounds = ""
        for m in meta:
            if isinstance(m, Interval):
                bounds = f" from {m.ge} to {m.le}"
            elif isinstance(m, Ge):
                bounds = f" >= {m.ge}"
        return _expected(base) + bounds
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is dict:
        return "an object of string values" if args[1:] == (str,) else "an object"
    if origin is list:
        return "a list of objects" if args and get_origin(args[0]) is dict else "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}.get(
        hint, str(hint)
    )
