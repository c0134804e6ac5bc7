"""The config repository's own CI: the workflow files `lfops init` seeds, the lfops they install, and the lines
`lfops validate` prints for them.

The workflows never install lfops by a bare package name: no `lfops` is published on PyPI, and whoever claimed the
name would run code in every user's CI. They install one pinned build instead:

- by default, **the running lfops itself, vendored**: `lfops init` writes it as a wheel into the config repository
  (`ci/lfops-<version>-py3-none-any.whl`) and the workflow checks the wheel's sha256 before installing it. This works
  for the embedded workspace and on any forge (GitHub, Gitea, GitLab) without a network path to wherever lfops'
  source lives, CI validates with exactly the rules of the server that seeded the repository, and the pin changes
  only by a reviewed commit. The wheel is built here, reproducibly (fixed timestamps, sorted entries: the same lfops
  gives the same bytes), from the imported packages and the installed distribution's metadata, so an editable
  checkout and an installed lfops (the container image) both produce one. Its dependencies come from PyPI by
  their pinned versions (`llamafactory==0.9.5`, `torch==2.11.0`, ...).
- **`LFOPS_CI_INSTALL`**, when the admin sets it: a pip requirement for `lfops` that names one build, either a Git
  URL at a tag or commit (`lfops @ git+https://git.example.com/ml/lfops@v0.2.0`) or a wheel URL with its hash
  (`lfops @ https://files.example.com/lfops-0.2.0-py3-none-any.whl#sha256=<64 hex>`). Then nothing is vendored.

To move the CI to a newer lfops, commit a new wheel (or requirement) and the new sha256 to the workflow files
through a change request, like any other change to the repository.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import re
import shlex
import zipfile
from pathlib import Path

import yaml

from backend import yamlio
from backend.demo import INSTALLED_CONFIGS, example_configs_dir
from backend.errors import LfopsError, Problem, SettingsError

GITHUB_WORKFLOW = ".github/workflows/validate.yml"  # Gitea Actions reads .github/workflows too
GITLAB_CI = ".gitlab-ci.yml"
VENDOR_DIR = "ci"
CI_INSTALL_SETTING = "LFOPS_CI_INSTALL"
_PACKAGES = ("backend", "webui")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry: wheels are the same bytes for same code

_GITHUB_TEMPLATE = """\
# Seeded by `lfops init`: validates every training config on each push and pull request (GitHub or Gitea Actions).
# lfops is installed pinned (see the first run step); its dependencies (llamafactory, torch, ...) come from PyPI.
name: validate training configs
on: [push, pull_request]
jobs:
  validate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with: {{python-version: "3.11"}}
      - name: install lfops (pinned)
        run: |
{install}
      - name: validate
        run: lfops validate --format github configs/*.yaml
"""
_GITLAB_TEMPLATE = """\
# Seeded by `lfops init`: validates every training config on each push and merge request.
# lfops is installed pinned (the first script lines); its dependencies (llamafactory, torch, ...) come from PyPI.
validate:
  image: python:3.11
  script:
{install}
    - lfops validate configs/*.yaml
"""


def pinned_requirement(requirement: str) -> str:
    """`requirement` if it names one build of lfops (a Git URL at a ref, or a wheel URL with #sha256=), else a
    SettingsError naming LFOPS_CI_INSTALL."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    def refuse(reason: str) -> SettingsError:
        return SettingsError(f"{CI_INSTALL_SETTING}: {reason}", field=CI_INSTALL_SETTING)

    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        raise refuse(f"not a pip requirement ({exc})") from None
    if canonicalize_name(parsed.name) != "lfops":
        raise refuse(f"must install lfops, not {parsed.name!r}")
    url = parsed.url or ""
    if not url:
        raise refuse(
            "a bare name or version is looked up on a package index, where lfops is not published; "
            "give 'lfops @ git+URL@TAG-OR-COMMIT' or 'lfops @ WHEEL-URL#sha256=HEX'"
        )
    if url.startswith("git+"):
        if not re.search(r"@[^/@]+$", url.split("#", 1)[0]):
            raise refuse("a Git URL must end in @<tag or commit>")
    elif not re.search(r"\.whl#sha256=[0-9a-f]{64}$", url):
        raise refuse("a wheel URL must end in .whl#sha256=<64 hex digits>")
    return requirement


def seed_files(ci_install: str = "") -> dict[str, str | bytes]:
    """The CI files of a new config repository (workflows, and the vendored wheel unless `ci_install` is set)."""
    if ci_install:
        install = [f"python -m pip install {shlex.quote(pinned_requirement(ci_install))}"]
        vendored: dict[str, str | bytes] = {}
    else:
        name, wheel = lfops_wheel()
        path = f"{VENDOR_DIR}/{name}"
        install = [
            f'echo "{hashlib.sha256(wheel).hexdigest()}  {path}" | sha256sum --check --strict',
            f"python -m pip install {path}",
        ]
        vendored = {path: wheel}
    return {
        GITHUB_WORKFLOW: _GITHUB_TEMPLATE.format(install="\n".join(" " * 10 + line for line in install)),
        GITLAB_CI: _GITLAB_TEMPLATE.format(install="\n".join(f"    - {_yaml_scalar(line)}" for line in install)),
        **vendored,
    }


def _yaml_scalar(text: str) -> str:
    """`text` as a YAML scalar: plain if YAML reads it back unchanged, else single-quoted."""
    try:
        if yaml.safe_load(text) == text:
            return text
    except yaml.YAMLError:
        pass
    return "'" + text.replace("'", "''") + "'"


def lfops_wheel() -> tuple[str, bytes]:
    """The running lfops as a wheel: (file name, bytes). Same files as setuptools' wheel of the source tree: the
    packages (without byte code), configs/ as data under share/lfops/configs, and the installed metadata."""
    # The installed distribution (its METADATA), not a source checkout's lfops.egg-info that happens to be on sys.path
    installed = [d for d in importlib.metadata.distributions(name="lfops") if d.read_text("METADATA")]
    if not installed:
        raise LfopsError(f"lfops is not installed, so it cannot be vendored for CI: set {CI_INSTALL_SETTING}")
    dist = installed[0]
    version = dist.version
    files: dict[str, bytes] = {}
    for package in _PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise LfopsError(f"lfops package {package!r} not found, so lfops cannot be vendored for CI")
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[f"{package}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    data = f"lfops-{version}.data/data/{INSTALLED_CONFIGS}"
    for path in sorted(example_configs_dir().glob("*.yaml")):
        files[f"{data}/{path.name}"] = path.read_bytes()
    info = f"lfops-{version}.dist-info"
    files[f"{info}/METADATA"] = (dist.read_text("METADATA") or "").encode()
    files[f"{info}/entry_points.txt"] = (dist.read_text("entry_points.txt") or "").encode()
    files[f"{info}/top_level.txt"] = "".join(f"{p}\n" for p in _PACKAGES).encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: lfops\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{name},sha256={_urlsafe_sha256(content)},{len(content)}" for name, content in sorted(files.items())]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name in sorted(files, key=lambda n: (n.startswith(info), n)):  # dist-info last, as wheels have it
            entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, files[name])
    return f"lfops-{version}-py3-none-any.whl", buffer.getvalue()


def _urlsafe_sha256(content: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------------------------------------------------
# What `lfops validate` prints: a line per problem, as text or as GitHub/Gitea workflow commands.

OUTPUT_FORMATS = ("text", "github")


def problem_line(path: str, problem: Problem, output_format: str = "text") -> str:
    """One problem of the config file at `path`: `path: key: reason` (text), or a workflow command that GitHub and
    Gitea show on the file and line of the key: `::error file=configs/x.yaml,line=7::learning_rate: ...`."""
    if output_format != "github":
        return f"{path}: warning: {problem}" if problem.severity == "warning" else f"{path}: {problem}"
    properties = {"file": _repository_path(path)}
    line = _line_of(path, problem.field)
    if line:
        properties["line"] = str(line)
    level = "warning" if problem.severity == "warning" else "error"
    props = ",".join(f"{k}={_escape(v, property_value=True)}" for k, v in properties.items())
    return f"::{level} {props}::{_escape(str(problem))}"


def _line_of(path: str, field: str) -> int | None:
    """The line a problem is about: a YAML error's own line, or the line of the key it names."""
    own = re.fullmatch(r"line (\d+)", field)
    if own:
        return int(own.group(1))
    try:
        return yamlio.key_lines(Path(path).read_bytes()).get(field)
    except OSError:
        return None


def _repository_path(path: str) -> str:
    """Annotations name files relative to the checkout (the working directory of the CI job)."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(absolute, cwd) if absolute.startswith(cwd + os.sep) else path


def _escape(text: str, property_value: bool = False) -> str:
    """Workflow-command escaping (actions/toolkit's command.ts): `%`, CR and LF always; `:` and `,` in properties."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text
