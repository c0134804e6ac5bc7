"""A workspace: the settings, the metadata store and the config repository, wired together once.

`Workspace.open()` is what the CLI and the WebUI start from; `Workspace.init()` makes the embedded default
(a bare Git repository as `origin`, SQLite, a tiny demo model and one user per role).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import select

from backend import audit, ci, demo
from backend.auth import ROLES, Actor, add_user, authenticate, new_password
from backend.forge import git_auth_env, make_forge
from backend.forge_sync import ForgeSync
from backend.gitstore import GitStore, Identity, init_origin
from backend.leader import Leadership
from backend.lineage import Lineage
from backend.preflight import Preflight
from backend.registry import Registry
from backend.retrain import Retrain
from backend.retrain.signals import signal_from_drift
from backend.review import ChangeRequests
from backend.runs import Runs, make_runner
from backend.sessions import WebSessions
from backend.settings import Settings
from backend.store import Store
from backend.store.models import User
from backend.tokens import Tokens
from backend.users import Users

if TYPE_CHECKING:
    from backend.monitoring.service import Monitoring
    from backend.notifications import Notifications
    from backend.serving.service import Serving

REPO_README = """\
# Training configs

Each file in `configs/` is a LLaMA-Factory training config (what `llamafactory-cli train` takes) plus an `lfops:`
block that lfops keeps for itself. Changes arrive as change requests from lfops and are merged after review.
`data/dataset_info.json` names the datasets; CI runs `lfops validate` on every change, with the lfops pinned in its
workflow files (by default the wheel in `ci/`, checked against its sha256).
"""


@dataclass
class InitResult:
    settings: Settings
    created: bool
    credentials: dict[str, tuple[str, str]]  # user -> (role, password), shown once, never stored in clear
    users: tuple[str, ...] = ()  # every user created, also those whose password was given (not in credentials)


class Workspace:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def open(cls, settings: Settings | None = None) -> Workspace:
        return cls(settings or Settings.from_env())

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.database_url)

    @cached_property
    def repo(self) -> GitStore:
        repo = GitStore(
            self.settings.mirror_dir,
            self.settings.repo_url,
            self.settings.main_branch,
            auth_env=git_auth_env(self.settings.forge, self.settings.forge_token),
        )
        repo.ensure_mirror()
        return repo

    @cached_property
    def preflight(self) -> Preflight:
        """Launch targets (this machine, the cluster profiles) against what a config needs: at save, review, launch."""
        return Preflight(lambda: self.settings)

    @cached_property
    def changes(self) -> ChangeRequests:
        # a recorded merge may launch its run (lfops.launch_on_merge) and settles retrain requests (backend.retrain)
        return ChangeRequests(
            self.store,
            self.repo,
            self.preflight,
            on_merged=lambda view, actor: self.retrain.on_merged(view, actor),
            forge=self.forge_sync,
        )

    @cached_property
    def retrain(self) -> Retrain:
        """Retrain change requests from signals (drift, new dataset versions), with a dependency bot's safeguards."""
        return Retrain(
            self.store,
            self.repo,
            self.changes,
            runs=lambda: self.runs,
            cooldown=timedelta(hours=self.settings.retrain_cooldown_hours),
            hourly_limit=self.settings.retrain_hourly_limit,
        )

    @cached_property
    def forge_sync(self) -> ForgeSync | None:
        """The pull requests on the forge LFOPS_FORGE names; None without one (lfops' own change requests)."""
        st = self.settings
        forge = make_forge(
            st.forge, st.forge_url, st.forge_repo, st.forge_token, st.forge_webhook_secret, timeout=st.forge_timeout
        )
        if forge is None:
            return None
        return ForgeSync(
            self.store,
            self.repo,
            forge,
            user_map=st.forge_user_map,
            public_url=st.public_url,
            merge_style=st.forge_merge_style,
        )

    @cached_property
    def registry(self) -> Registry:
        # a version registered from a run rolls the deployments that follow its config (made on first need)
        return Registry(self.store, self.settings, on_registered=lambda view: self.serving.on_registered(view))

    @cached_property
    def runs(self) -> Runs:
        """Launch policy and run tracking over the runner settings.runner names (local by default)."""
        return Runs(
            self.store,
            self.repo,
            make_runner(self.settings, self.repo),
            self.registry,
            other_runners=lambda name: make_runner(self.settings, self.repo, name),
            preflight=self.preflight,
        )

    @cached_property
    def serving(self) -> Serving:
        """Deployments of registry versions, locally (settings.workspace/serving) or on cluster profiles."""
        from backend.monitoring.sampler import DATABASE_VARIABLE, OBSERVER
        from backend.serving.service import Serving  # the gateway's stack loads only when serving is used

        # each local gateway samples requests into this store (backend.monitoring.sampler)
        sampling = {"observers": (OBSERVER,), "observer_env": {DATABASE_VARIABLE: self.settings.database_url}}
        return Serving(self.store, self.registry, self.settings, local_options=sampling)

    @cached_property
    def monitoring(self) -> Monitoring:
        """Request samples and drift reports of deployments; `monitoring.on_drift_declared` takes hooks."""
        from backend.monitoring.service import Monitoring

        monitoring = Monitoring(self.store, self.repo)
        # a declared drift opens (or comments on) the model's retrain change request: never a silent retrain
        monitoring.on_drift_declared.append(lambda report: self.retrain.handle(signal_from_drift(report)))
        return monitoring

    @cached_property
    def lineage(self) -> Lineage:
        return Lineage(self.store, self.registry)

    @cached_property
    def tokens(self) -> Tokens:
        """Personal API tokens: create, list, revoke, and check a presented one."""
        return Tokens(self.store)

    @cached_property
    def users(self) -> Users:
        """User administration (admins): add, role, deactivate, reset password, delete; never the last admin."""
        return Users(self.store)

    @cached_property
    def sessions(self) -> WebSessions:
        """WebUI sign-in sessions, in the store: they survive a restart and hold on every replica."""
        return WebSessions(self.store)

    @cached_property
    def leadership(self) -> Leadership:
        """The run monitor's election among app replicas (started by the app: webui/serve.py)."""
        return Leadership(self.store, self.settings.workspace)

    @cached_property
    def notifications(self) -> Notifications:
        """Notification targets, mutes, the delivery log and the dispatcher (backend.notifications)."""
        from backend.notifications import Notifications  # cryptography and apprise load only when notifying

        return Notifications(self.store, self.settings)

    def login(self, name: str, password: str) -> Actor:
        with self.store.session() as s:
            return authenticate(s, name, password)

    # ---- init ---------------------------------------------------------------------------------------------------

    def init(self, demo_users: bool = True, with_model: bool = True) -> InitResult:
        """Create what is missing of the embedded default; an existing workspace is left as it is."""
        ws = self.settings
        ws.workspace.mkdir(parents=True, exist_ok=True)
        self.store.upgrade()  # the schema changes only on purpose: here, and in `lfops db upgrade`
        model_dir = ws.models_dir / demo.DEMO_MODEL
        if with_model:
            demo.make_tiny_model(model_dir)
        created = False
        origin = ws.workspace / "origin.git"
        if ws.repo_url == str(origin) and not (origin / "HEAD").exists():
            files = {
                **demo.dataset_files(),
                "README.md": REPO_README,
                **ci.seed_files(ws.ci_install),
                **demo.example_configs(model_dir),
            }
            init_origin(origin, files, Identity("lfops", "lfops@localhost"), ws.main_branch)
            created = True
        self.repo.fetch()
        credentials: dict[str, tuple[str, str]] = {}
        users: list[str] = []
        with self.store.session() as s:
            if s.scalar(select(User.id).limit(1)) is None:
                # An admin password given (LFOPS_ADMIN_PASSWORD, e.g. a mounted Secret) means a real deployment: only
                # the admin is created and no password is printed; demo users would need theirs shown once.
                given = ws.admin_password
                with_demo_users = demo_users and not given
                names = {"admin": "admin"} | ({"analyst": "alice", "reviewer": "rita"} if with_demo_users else {})
                for role in ROLES:
                    if role in names:
                        from_settings = bool(given) and role == "admin"
                        password = given if from_settings else new_password()
                        add_user(s, names[role], role, password)
                        users.append(names[role])
                        if not from_settings:
                            credentials[names[role]] = (role, password)
                audit.record(s, "lfops", "workspace.init", str(ws.workspace), users=sorted(users))
                created = True
        return InitResult(ws, created, credentials, tuple(users))
