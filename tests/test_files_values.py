"""Files and values: datasets and DeepSpeed configs are regular files inside the repository, values are finite and in
range, YAML is bounded in depth and size; refused the same way by save (a Git tree) and `lfops validate` (a
checkout), with the key named, and nothing written."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backend import yamlio
from backend.cli import main
from backend.config import REGULAR_FILES_ONLY, DirFiles, TrainConfig
from backend.errors import ValidationFailed
from tests.snapshots import snapshot


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


def push_to_main(env, tmp_path: Path, change: Callable[[Path], None]) -> Path:
    """Someone changes main directly (links and all, as Git allows); returns their checkout."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(env.origin), str(clone)], check=True)
    change(clone)
    git(clone, "add", "-A")
    git(clone, "-c", "user.name=mallory", "-c", "user.email=m@x", "commit", "-qm", "data")
    git(clone, "push", "-q", "origin", "HEAD:main")
    return clone


def config_with(env, **args: object) -> TrainConfig:
    config = TrainConfig.parse(env.example_yaml())
    config.args.update(args)
    return config


def validate_lines(clone: Path, text: str | bytes, capsys) -> tuple[int, list[str]]:
    """`lfops validate` of `text` as configs/x.yaml in the checkout `clone`: exit code and output lines."""
    path = clone / "configs" / "x.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = main(["validate", str(path), "--repo-root", str(clone)])
    out = capsys.readouterr()
    prefix = f"{path}: "
    return code, [line.removeprefix(prefix) for line in out.out.splitlines()] + out.err.splitlines()


def refused_by_save(env, config: TrainConfig | bytes | str) -> str:
    with pytest.raises(ValidationFailed) as info:
        env.ws.changes.save(env.actor("alice"), config, "x", "msg")
    return str(info.value).removeprefix("x: ")


# ---- symbolic links ---------------------------------------------------------------------------------------------


def add_links(clone: Path) -> None:
    data = clone / "data"
    info = json.loads((data / "dataset_info.json").read_text())
    outside = clone.parent / "outside.json"
    outside.write_text('[{"instruction": "secret", "input": "", "output": "x"}]')
    (data / "outside.json").symlink_to(outside)  # a link out of the repository
    (data / "inside.json").symlink_to("demo_arith.json")  # a link to a file of the repository: still a link
    (data / "folder").mkdir()
    (data / "folder" / "part1.json").write_text((data / "demo_arith.json").read_text())
    (data / "folder" / "part2.json").symlink_to(outside)
    info |= {name: {"file_name": f"{name}.json"} for name in ("outside", "inside")}
    info["folder"] = {"file_name": "folder"}
    (data / "dataset_info.json").write_text(json.dumps(info))
    (clone / "ds").mkdir()
    (clone / "ds" / "z2.json").write_text('{"zero_optimization": {"stage": 2}}')
    (clone / "ds" / "link.json").symlink_to("z2.json")
    (clone / "linked_data").mkdir()
    (clone / "linked_data" / "dataset_info.json").symlink_to("../data/dataset_info.json")


LINKS = [
    ({"dataset": "outside"}, f"dataset: 'outside': data/outside.json is a symbolic link; {REGULAR_FILES_ONLY}"),
    ({"dataset": "inside"}, f"dataset: 'inside': data/inside.json is a symbolic link; {REGULAR_FILES_ONLY}"),
    ({"dataset": "folder"}, f"dataset: 'folder': data/folder/part2.json is a symbolic link; {REGULAR_FILES_ONLY}"),
    ({"deepspeed": "ds/link.json"}, f"deepspeed: ds/link.json is a symbolic link; {REGULAR_FILES_ONLY}"),
    (
        {"dataset_dir": "linked_data"},
        f"dataset_dir: linked_data/dataset_info.json is a symbolic link; {REGULAR_FILES_ONLY}",
    ),
]


def test_symbolic_links_are_refused_the_same_way_by_save_and_validate(any_db_env, tmp_path, capsys):
    env = any_db_env
    clone = push_to_main(env, tmp_path, add_links)
    assert git(clone, "ls-files", "-s", "data/outside.json").startswith("120000 ")  # a link blob in the tree
    before = snapshot(env)
    for args, expected in LINKS:
        config = config_with(env, **args)
        assert refused_by_save(env, config) == expected
        assert snapshot(env) == before
        assert validate_lines(clone, config.canonical_yaml(), capsys) == (1, [expected])
    # the regular files beside them are fine
    assert validate_lines(clone, config_with(env, deepspeed="ds/z2.json").canonical_yaml(), capsys)[0] == 0


def test_dirfiles_lists_links_without_following_them(tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.json").write_text("[]")
    (tmp_path / "data" / "sub" / "b.json").write_text("[]")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.json").write_text("[]")
    (tmp_path / "data" / "link_dir").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "data" / "link_file").symlink_to(tmp_path / "data" / "a.json")
    files = DirFiles(tmp_path)
    assert files.list_files("data") == ["data/a.json", "data/link_dir", "data/link_file", "data/sub/b.json"]
    assert [files.is_link(p) for p in files.list_files("data")] == [False, True, True, False]
    assert files.is_link("data/link_dir/c.json") and not files.is_link("data/missing.json")


# ---- DeepSpeed configs outside the repository ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/ds_z3.json", "../ds_z3.json", "examples/../../ds_z3.json", "."])
def test_a_deepspeed_path_outside_the_repository_is_refused_by_validate(tmp_path, capsys, path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "configs").mkdir()
    (repo / "data" / "d.json").write_text("[]")
    (repo / "data" / "dataset_info.json").write_text('{"d": {"file_name": "d.json"}}')
    (tmp_path / "ds_z3.json").write_text('{"zero_optimization": {"stage": 3}}')
    text = yamlio.dump(
        {
            "model_name_or_path": "m",
            "stage": "sft",
            "do_train": True,
            "finetuning_type": "lora",
            "dataset": "d",
            "template": "default",
            "deepspeed": path,
        }
    )
    assert validate_lines(repo, text, capsys) == (
        1,
        [f"deepspeed: must be a path inside the config repository, got {path!r}"],
    )


def test_a_deepspeed_path_outside_the_repository_is_refused_by_save(any_db_env):
    env = any_db_env
    before = snapshot(env)
    for path in ("/etc/ds_z3.json", "../ds_z3.json"):
        assert refused_by_save(env, config_with(env, deepspeed=path)) == (
            f"deepspeed: must be a path inside the config repository, got {path!r}"
        )
    assert snapshot(env) == before


def test_a_deepspeed_file_missing_from_the_repository_is_a_warning(tmp_path):
    config = TrainConfig.parse(yamlio.dump({"deepspeed": "examples/deepspeed/ds_z3_config.json"}))
    assert [str(p) for p in config.check_deepspeed(DirFiles(tmp_path))] == [
        "deepspeed: examples/deepspeed/ds_z3_config.json is not a file in the config repository"
    ]


# ---- values: non-finite and out of range, through save and validate -------------------------------------------------

VALUES = [
    ("learning_rate: .nan", "learning_rate: must be a finite number (got nan)"),
    ("learning_rate: .inf", "learning_rate: must be a finite number (got inf)"),
    ("learning_rate: 1e999", "learning_rate: must be a finite number (got inf)"),
    ("num_train_epochs: -1.0", "num_train_epochs: must be greater than 0 (got -1.0)"),
    ("per_device_train_batch_size: 0", "per_device_train_batch_size: must be at least 1 (got 0)"),
    ("per_device_train_batch_size: -2", "per_device_train_batch_size: must be at least 1 (got -2)"),
    ("lfops:\n  budget: -.inf", "lfops.budget: must be a finite number (got -inf)"),
    # longer than the store's columns: refused by name, not a database traceback on PostgreSQL
    ("model_name_or_path: org/" + "m" * 600, "model_name_or_path: must be at most 500 characters (got 604)"),
    ("model_revision: " + "r" * 65, "model_revision: must be at most 64 characters (got 65)"),
]


def with_line(env, line: str) -> str:
    """The example config with `line` replacing its key (or the lfops block), as a user would type it."""
    key = line.split(":")[0]
    lines = env.example_yaml().decode().splitlines()
    if key == "lfops":
        lines = lines[: next(i for i, ln in enumerate(lines) if ln.startswith("lfops:"))]
    else:
        lines = [ln for ln in lines if not ln.startswith(f"{key}:")]
    return "\n".join(lines) + f"\n{line}\n"


def test_out_of_range_values_are_refused_by_save_and_validate(any_db_env, tmp_path, capsys):
    env = any_db_env
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(env.origin), str(clone)], check=True)
    before = snapshot(env)
    for line, expected in VALUES:
        text = with_line(env, line)
        assert refused_by_save(env, text) == expected
        assert validate_lines(clone, text, capsys) == (1, [expected])
    assert snapshot(env) == before


# ---- YAML nesting and size ----------------------------------------------------------------------------------------

DEEP = [
    ("flow", "a: " + "[" * 10_000 + "]" * 10_000 + "\n", "line 1"),
    ("flow mapping", "a: " + "{b: " * 10_000 + "1" + "}" * 10_000 + "\n", "line 1"),
    ("block", "a:\n" + "- " * 10_000 + "x\n", "line 2"),
]


@pytest.mark.parametrize(("style", "text", "where"), DEEP, ids=[d[0] for d in DEEP])
def test_deeply_nested_yaml_is_a_message_not_a_recursion_error(tmp_path, capsys, style, text, where):
    expected = f"{where}: invalid YAML: nested more than {yamlio.MAX_DEPTH} levels deep"
    with pytest.raises(ValidationFailed, match=expected):
        TrainConfig.parse(text)
    assert yamlio.key_lines(text) == {}
    (tmp_path / "configs").mkdir()
    assert validate_lines(tmp_path, text, capsys) == (1, [expected])


def test_nesting_up_to_the_cap_is_read():
    assert yamlio.load_mapping("a: " + "[" * 63 + "]" * 63)["a"] is not None


def test_deep_and_huge_yaml_are_refused_by_save_and_change_nothing(any_db_env):
    env = any_db_env
    before = snapshot(env)
    for _style, text, where in DEEP:
        for data in (text, text.encode()):
            message = refused_by_save(env, data)
            assert message == f"{where}: invalid YAML: nested more than {yamlio.MAX_DEPTH} levels deep"
    huge = env.example_yaml().decode() + "# " + "x" * 1_100_000 + "\n"  # valid, and canonical form drops comments
    for data in (huge, huge.encode()):
        assert refused_by_save(env, data).startswith("file: is 1,10")
        assert "larger than the 1,000,000 bytes a config may have" in refused_by_save(env, data)
    assert snapshot(env) == before


def test_deeply_nested_json_files_are_a_message(any_db_env, tmp_path, capsys):
    """dataset_info.json and DeepSpeed configs are JSON: nested 100,000 deep they are a message, not a traceback."""

    def deep_json(clone: Path) -> None:
        (clone / "data" / "dataset_info.json").write_text("[" * 100_000 + "]" * 100_000)
        (clone / "ds.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)

    env = any_db_env
    config = config_with(env, deepspeed="ds.json")
    clone = push_to_main(env, tmp_path, deep_json)
    expected = "dataset_dir: data/dataset_info.json is not valid JSON: nested too deeply"
    before = snapshot(env)
    assert refused_by_save(env, config) == expected
    assert snapshot(env) == before
    assert validate_lines(clone, config.canonical_yaml(), capsys) == (1, [expected])
