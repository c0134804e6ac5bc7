"""The config repository's CI as `lfops init` seeds it: its steps run in a fresh virtualenv against a clone of the
repository and pass or fail on the config; the lfops they install is pinned and is the one that runs here."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from backend import ci, yamlio
from backend.errors import Problem, SettingsError
from tests.helpers import git_clone

ROOT = Path(__file__).resolve().parent.parent
KNOWN_ACTIONS = ["actions/checkout@v4", "actions/setup-python@v5"]  # what the runner does before the `run:` steps


def github_script(repo: Path) -> str:
    steps = yaml.safe_load((repo / ci.GITHUB_WORKFLOW).read_text())["jobs"]["validate"]["steps"]
    assert [s["uses"] for s in steps if "uses" in s] == KNOWN_ACTIONS
    return "\n".join(s["run"] for s in steps if "run" in s)


def gitlab_script(repo: Path) -> str:
    job = yaml.safe_load((repo / ci.GITLAB_CI).read_text())["validate"]
    assert job["image"] == "python:3.11"
    return "\n".join(job["script"])


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtualenv without lfops that sees this venv's packages (torch, llamafactory...) as installed, so the
    workflow's own `pip install` installs lfops only; no index is reachable (PIP_NO_INDEX) to fetch anything else."""
    root = tmp_path_factory.mktemp("ci")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    deps = root / "deps"  # this venv's site-packages without lfops (its editable install) and without pip
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if not (name.startswith(("lfops", "__editable__", "pip", "_distutils_hack")) or name.endswith(".pth")):
            (deps / entry.name).symlink_to(entry)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    (site_packages / "zz-host-dependencies.pth").write_text(f"{deps}\n")
    return venv


def run_script(script: str, repo: Path, venv: Path) -> subprocess.CompletedProcess:
    """The steps as the runner runs them: bash -eo pipefail in the checkout, with the job's Python first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LFOPS_", "PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env |= {"PATH": f"{venv / 'bin'}:{env['PATH']}", "VIRTUAL_ENV": str(venv), "PIP_NO_INDEX": "1"}
    env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_FIND_LINKS": ""}
    (repo.parent / "step.sh").write_text(script + "\n")
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(repo.parent / "step.sh")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_seeded_workflows_pass_a_valid_config_and_fail_a_broken_one_naming_the_key(
    template_workspace, fresh_venv, tmp_path
):
    repo = tmp_path / "configs-repo"
    git_clone(template_workspace[0] / "origin.git", repo)

    valid = run_script(github_script(repo), repo, fresh_venv)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "::error" not in valid.stdout
    installed = subprocess.run(
        [
            str(fresh_venv / "bin" / "python"),
            "-c",
            "import backend.demo as d; print(d.__file__, d.example_configs_dir())",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
        cwd=tmp_path,  # not this checkout, whose backend/ `python -c` would import
    ).stdout.split()
    assert installed[0].startswith(str(fresh_venv)), installed  # the wheel's lfops, not this checkout
    assert installed[1] == str(fresh_venv / "share" / "lfops" / "configs")  # configs/ shipped as data

    example = repo / "configs" / "example.yaml"
    example.write_text(example.read_text().replace("num_train_epochs: 2.0", "num_train_epochs: -2.0"))
    line = yamlio.key_lines(example.read_bytes())["num_train_epochs"]
    broken = run_script(github_script(repo), repo, fresh_venv)
    assert broken.returncode != 0
    assert (
        f"::error file=configs/example.yaml,line={line}::num_train_epochs: must be greater than 0 (got -2.0)"
        in broken.stdout.splitlines()
    ), broken.stdout + broken.stderr

    gitlab = run_script(gitlab_script(repo), repo, fresh_venv)
    assert gitlab.returncode != 0
    assert "configs/example.yaml: num_train_epochs: must be greater than 0 (got -2.0)" in gitlab.stdout.splitlines()


def test_the_ci_installs_the_vendored_wheel_checked_against_its_hash(template_workspace, tmp_path):
    repo = tmp_path / "configs-repo"
    git_clone(template_workspace[0] / "origin.git", repo)
    name, wheel = ci.lfops_wheel()
    assert (repo / ci.VENDOR_DIR / name).read_bytes() == wheel  # the lfops running here, byte for byte
    digest = hashlib.sha256(wheel).hexdigest()
    for script in (github_script(repo), gitlab_script(repo)):
        assert f'echo "{digest}  ci/{name}" | sha256sum --check --strict' in script.splitlines()
        assert "pip install lfops" not in script
    (repo / ci.VENDOR_DIR / name).write_bytes(wheel + b"tampered")
    check = subprocess.run(
        ["bash", "-c", github_script(repo).splitlines()[0]], cwd=repo, capture_output=True, text=True
    )
    assert check.returncode != 0 and "FAILED" in check.stdout


def test_vendored_wheel_is_reproducible():
    assert ci.lfops_wheel() == ci.lfops_wheel()


@pytest.mark.slow
def test_vendored_wheel_has_the_files_of_setuptools_wheel(tmp_path):
    """The wheel lfops writes for CI and the one `pip wheel .` builds (Dockerfile) hold the same files, configs too."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for folder in ("backend", "webui", "configs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k != "PIP_NO_INDEX"}
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if build.returncode != 0 and "No matching distribution found for setuptools" in build.stdout + build.stderr:
        pytest.skip("no package index to fetch setuptools from for an isolated build")
    assert build.returncode == 0, build.stdout + build.stderr
    name, wheel = ci.lfops_wheel()
    built = zipfile.ZipFile(tmp_path / "dist" / name)
    ours = zipfile.ZipFile(io.BytesIO(wheel))
    assert sorted(built.namelist()) == sorted(ours.namelist())
    assert "lfops-0.1.0.data/data/share/lfops/configs/example.yaml" in ours.namelist()
    differ = [n for n in ours.namelist() if ours.read(n) != built.read(n)]
    assert sorted(differ) == ["lfops-0.1.0.dist-info/RECORD", "lfops-0.1.0.dist-info/WHEEL"]


@pytest.mark.parametrize(
    ("requirement", "reason"),
    [
        ("lfops", "a bare name or version is looked up on a package index"),
        ("lfops==0.1.0", "a bare name or version is looked up on a package index"),
        ("lfops @ git+https://git.example.com/ml/lfops", "a Git URL must end in @<tag or commit>"),
        ("lfops @ https://files.example.com/lfops-0.1.0-py3-none-any.whl", "a wheel URL must end in .whl#sha256="),
        ("lfopz @ git+https://git.example.com/ml/lfops@v1", "must install lfops, not 'lfopz'"),
        ("lfops @", "not a pip requirement"),
    ],
)
def test_an_unpinned_install_source_is_refused_naming_the_setting(requirement, reason):
    with pytest.raises(SettingsError, match=reason) as caught:
        ci.seed_files(requirement)
    assert caught.value.field == "LFOPS_CI_INSTALL" and str(caught.value).startswith("LFOPS_CI_INSTALL: ")


@pytest.mark.parametrize(
    "requirement",
    [
        "lfops @ git+https://git.example.com/ml/lfops@v0.2.0",
        "lfops @ git+https://git.example.com/ml/lfops@0123456789abcdef0123456789abcdef01234567",
        "lfops @ https://files.example.com/lfops-0.2.0-py3-none-any.whl#sha256=" + "ab" * 32,
    ],
)
def test_a_pinned_install_source_replaces_the_vendored_wheel(requirement):
    files = ci.seed_files(requirement)
    assert sorted(files) == [ci.GITHUB_WORKFLOW, ci.GITLAB_CI]
    github = yaml.safe_load(files[ci.GITHUB_WORKFLOW])["jobs"]["validate"]["steps"]
    gitlab = yaml.safe_load(files[ci.GITLAB_CI])["validate"]["script"]
    expected = f"python -m pip install '{requirement}'"
    assert expected in github[2]["run"].splitlines() and gitlab[0] == expected


def test_annotations_point_at_the_key_and_escape_what_github_parses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "x.yaml").write_text("stage: sft\nlearning_rate: .nan\nlfops:\n  budget: .inf\n")
    line = ci.problem_line
    assert line("configs/x.yaml", Problem("learning_rate", "must be finite"), "github") == (
        "::error file=configs/x.yaml,line=2::learning_rate: must be finite"
    )
    assert line(str(tmp_path / "configs" / "x.yaml"), Problem("lfops.budget", "50%\nbad"), "github") == (
        "::error file=configs/x.yaml,line=4::lfops.budget: 50%25%0Abad"
    )
    assert line("configs/x.yaml", Problem("dataset", "hub", "warning"), "github") == (
        "::warning file=configs/x.yaml::dataset: hub"
    )
    assert line("configs/x.yaml", Problem("line 3", "invalid YAML"), "github").startswith(
        "::error file=configs/x.yaml,line=3::"
    )
    assert line("a,b:c.yaml", Problem("file", "gone"), "github") == "::error file=a%2Cb%3Ac.yaml::file: gone"
    assert line("configs/x.yaml", Problem("dataset", "hub", "warning")) == "configs/x.yaml: warning: dataset: hub"
