"""The import direction of docs/architecture.md, checked: import-linter's contracts in pyproject.toml hold for the code
as it is, and each kind of contract breaks when a wrong import is added to a copy of the code (so a check that
cannot fail would show here). Also: importing any backend module loads none of the heavy packages.

To see a contract fail by hand: add `import webui` inside any function of backend/, run `.venv/bin/lint-imports`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ROOT

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
CONTRACTS = {
    c["id"]: c["name"]
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}
# Imported by some backend module on first use, never by importing backend (`lfops --help` stays fast).
HEAVY = ("kubernetes", "torch", "transformers", "llamafactory", "gradio", "webui", "pandas", "matplotlib", "sklearn")


def lint_imports(root: Path) -> tuple[int, str]:
    """`lint-imports` on the code under `root` (its backend/ and webui/ first on the path); exit code and report
    with the line wrapping undone."""
    proc = subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def test_the_code_keeps_every_import_contract():
    code, report = lint_imports(ROOT)
    assert code == 0, report
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in report
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in report


# (file, the wrong import added to it, the contract that must break)
WRONG_IMPORTS = [
    # the WebUI imported lazily, inside a function: what a CLI "convenience" would do
    ("backend/cli/main.py", "def _serve():\n    from webui import serve\n", "backend-is-a-library"),
    ("backend/runners/local.py", "import kubernetes\n", "heavy-imports-behind-adaptors"),
    ("webui/review_tab.py", "from backend.store import models\n", "webui-through-the-backend"),
    ("backend/store/models.py", "from backend import config\n", "backend-layers"),  # two independent siblings
    ("backend/runners/base.py", "from backend.runs import queries\n", "backend-layers"),  # upwards
    ("backend/cli/runs.py", "from backend.cli import review\n", "cli-command-groups"),
    ("backend/runs/queries.py", "from backend.runs import tracking\n", "runs-one-module-per-job"),
    ("backend/preflight/needs.py", "from backend.preflight import memory\n", "preflight-one-module-per-job"),
    ("backend/monitoring/length_psi.py", "from backend.monitoring import checks\n", "monitoring-one-module-per-job"),
    ("backend/runners/local.py", "from backend.runners import kubernetes\n", "runners"),
    ("backend/runners/kubernetes/manifests.py", "from backend.runners.kubernetes import client\n", "kubernetes-runner"),
    ("webui/runs_tab.py", "from webui import review_tab\n", "webui-layers"),
    ("backend/forge/http.py", "from backend.forge import gitlab\n", "no-cycles"),  # gitlab imports http
]


@pytest.mark.parametrize(("path", "wrong", "contract"), WRONG_IMPORTS, ids=[f"{c}:{p}" for p, _, c in WRONG_IMPORTS])
def test_a_wrong_import_breaks_its_contract(tmp_path, path, wrong, contract):
    for package in ("backend", "webui"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / path, "a") as fh:
        fh.write(f"\n\n{wrong}")
    code, report = lint_imports(tmp_path)
    assert code == 1, report
    assert f"{CONTRACTS[contract]} BROKEN" in report


def test_every_contract_is_shown_to_break():
    assert {contract for _, _, contract in WRONG_IMPORTS} == set(CONTRACTS)


# ---- heavy packages: imported on first use, never by importing backend ---------------------------------------------

IMPORT_ALL = """
import importlib, pkgutil, sys
import backend
for module in pkgutil.walk_packages(backend.__path__, "backend."):
    if ".migrations" not in module.name and not module.name.endswith("__main__"):
        importlib.import_module(module.name)
{after}
print(sorted({{name.split(".")[0] for name in sys.modules}} & set({heavy!r})))
"""


def loaded_after_importing_backend(after: str = "") -> str:
    script = IMPORT_ALL.format(after=after, heavy=HEAVY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_importing_every_backend_module_loads_no_heavy_package():
    assert loaded_after_importing_backend() == "[]"
    # the same check sees a heavy package once something uses it: the Kubernetes adaptor, on first attribute read
    used = "from backend.adaptors import kubernetes as k8s\nk8s.client.V1Job"
    assert loaded_after_importing_backend(used) == "['kubernetes']"
