"""LlamaBoard's working directory inside the workspace (`<ws>/llamaboard`).

LlamaBoard reads and writes relative to the current directory (`data/`, `saves/`, `llamaboard_cache/`,
`llamaboard_config/`). The WebUI runs there, and `data/` is a read-only export of the config repository's `data/` on
main, so LlamaBoard's dataset dropdown lists exactly the datasets a saved config can name with `dataset_dir: data`.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path

import yaml

from backend.workspace import Workspace

DATA = "data"
_EXPORTS = ".data"


class Workdir:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.root = ws.settings.workspace / "llamaboard"
        self._lock = threading.Lock()
        self._exported = ""

    @property
    def data(self) -> Path:
        return self.root / DATA

    def prepare(self) -> None:
        """Create the directory, export data/, and offer the demo model under LlamaBoard's "Custom" model name."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.refresh_data()
        user_config = self.root / "llamaboard_cache" / "user_config.yaml"
        demo_model = self.ws.settings.models_dir / "tiny-llama"
        if not user_config.exists() and demo_model.is_dir():
            user_config.parent.mkdir(parents=True, exist_ok=True)
            seed = {"lang": "en", "hub_name": None, "last_model": None, "cache_dir": None}
            user_config.write_text(yaml.safe_dump({**seed, "path_dict": {"Custom": str(demo_model)}}))

    def refresh_data(self) -> str:
        """Export data/ of main when main has moved since the last export; returns main's commit."""
        main = self.ws.repo.sync_main()
        with self._lock:
            current = self.data.resolve().name if self.data.is_symlink() else ""
            if main == self._exported or current == main:
                self._exported = main
                return main
            exports = self.root / _EXPORTS
            target = exports / main
            if not target.exists():
                tmp = exports / f"tmp-{main}"
                _remove(tmp)
                tmp.mkdir(parents=True)
                self._extract(main, tmp)
                _read_only(tmp)
                tmp.rename(target)
            link = self.root / f".{DATA}-link"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path(_EXPORTS) / main)
            if self.data.exists() and not self.data.is_symlink():
                _remove(self.data)  # a folder left by hand: the export replaces it
            os.replace(link, self.data)  # atomic: a reader sees the old or the new export, never half of one
            for old in exports.iterdir():
                if old.name != main:
                    _remove(old)
            self._exported = main
            return main

    def _extract(self, commit: str, dest: Path) -> None:
        files = self.ws.repo.files(commit).list_files(DATA)
        if not files:
            return
        self.ws.repo.extract(commit, dest, DATA, regular_files_only=True)


def _read_only(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    path.chmod(0o555)


def _remove(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    for p in [path, *path.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
    shutil.rmtree(path)
