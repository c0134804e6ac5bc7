"""Credentials caught by their value (backend.secret_scan): in every string of a config, in save messages, names and
branches; refused naming the key and the kind, never echoing the value, before anything is written."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from backend import demo, yamlio
from backend.cli import main
from backend.config import DirFiles, TrainConfig
from backend.errors import ValidationFailed
from backend.secret_scan import mask, refuse_secrets, scan, secret_kinds
from tests.snapshots import snapshot

# Fake credentials of each shape, assembled so that no scanner flags this file itself.
HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
SECRETS = {
    "a Hugging Face token": HF,
    "an OpenAI-style API key": "sk-" + "proj-Ab3dEf6hIj9lMn0pQr1tUv2xYz3AbCdEfGhIjKlMn",
    "a GitHub token": "ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6",
    "a GitLab token": "glpat-" + "aB3dE6gH9jK2mN5pQ8sT",
    "an AWS access key": "AKIA" + "Z7XQ4RT2MBW9LK3P",
    "an AWS secret access key": "Zt4qP9xL2mW8vR3nB7kD5hF1" + "jG6sA0cE/u+YoQiT",
    "a private key": "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "a JSON Web Token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    + "eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "a Slack token": "xoxb-" + "123456789012-1234567890123-abcdefghijklmnopqrstuvwx",
    "a URL with a password": "postgresql://" + "trainer:Hunter2pass@db.example.com/lfops",
}
MORE_SHAPES = [
    "sk-" + "A" * 20 + "T3BlbkFJ" + "b1" * 10,  # OpenAI's legacy form
    "sk-" + "ant-api03-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm",
    "gho_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6",
    "github_pat_" + "11ABCDEFG0aB3dE6gH9jK2mN5pQ8sT1v_W4yZ7bC0eF3hJ6aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0",
    "-----BEGIN " + "ENCRYPTED PRIVATE KEY-----",
    "AIza" + "SyA1234567890abcdefghijklmnopqrstuv",
    "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # AWS's own example, after its keyword
]


@pytest.mark.parametrize(("kind", "secret"), sorted(SECRETS.items()))
def test_each_kind_of_credential_is_named_and_masked(kind, secret):
    assert secret_kinds(f"run {secret} now") == [kind]
    masked = mask(f"run {secret} now")
    assert masked.startswith("run ") and masked.endswith(" now") and secret not in masked
    assert not any(len(part) >= 6 and part in masked for part in secret.split("\n"))


@pytest.mark.parametrize("secret", MORE_SHAPES)
def test_newer_and_older_token_forms_are_caught(secret):
    assert secret_kinds(secret)


BENIGN = [
    "sha256:" + hashlib.sha256(b"x").hexdigest(),
    hashlib.sha256(b"y").hexdigest().upper(),
    "11f6ad8ec52a2984abaafd7c3b516503785c2072",  # a commit id (model_revision)
    "Qwen/Qwen2.5-0.5B-Instruct",
    "meta-llama/Meta-Llama-3-8B-Instruct",
    "saves/Llama3/lora/sft/checkpoint1000abcd",  # 40 base64 characters, but words
    "outputs/Llama3x8B/qlora4bit/run20240517a",
    "mask-language-model-finetune-v2-experiment",
    "task-something_long_name_123456789abcdefghij",
    "hf_hub_url",
    "examples/deepspeed/ds_z3_config.json",
    "alice <alice@lfops.local>",
    "git@github.com:org/repo.git",
    "https://huggingface.co/datasets/org/ds",
    "Try LoRA rank 16 with a cosine schedule and 2 epochs",
]


@pytest.mark.parametrize("value", BENIGN)
def test_ordinary_config_values_are_not_taken_for_secrets(value):
    assert secret_kinds(value) == []


def test_real_configs_pass_the_scan():
    """LLaMA-Factory's example corpus and lfops' own example configs hold no credential shape."""
    corpus = Path(__file__).parent / "corpus"
    paths = sorted(corpus.glob("**/*.yaml")) + sorted(demo.example_configs_dir().glob("*.yaml"))
    assert len(paths) > 50
    for path in paths:
        config = TrainConfig.load(path)
        assert scan(config.args, "") + scan(config.metadata, "lfops") == [], path


@pytest.mark.parametrize(
    "crafted",
    ["eyJ" * 300_000, "sk-" * 300_000, "//" * 400_000, "-----BEGIN" * 90_000, "xoxb-1-" * 130_000, "a" * 900_000],
)
def test_crafted_megabyte_is_scanned_in_linear_time(crafted):
    """detect-secrets' own JWT pattern needs ten minutes for "eyJ" * 300,000; ours take about a second."""
    start = time.monotonic()
    secret_kinds(crafted)
    mask(crafted)
    assert time.monotonic() - start < 20


# ---- in a config: every string, nested ones and keys, named as the user sees them -------------------------------

BASE = {
    "model_name_or_path": "/models/tiny",
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "dataset": "demo",
    "template": "default",
    "output_dir": "saves/x",
}


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo.json").write_text('[{"instruction": "a", "input": "", "output": "b"}]')
    (tmp_path / "data" / "dataset_info.json").write_text('{"demo": {"file_name": "demo.json"}}')
    return tmp_path


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"run_name": HF}, "run_name"),
        ({"output_dir": f"saves/{HF}"}, "output_dir"),
        ({"dataset": ["demo", HF]}, "dataset[1]"),
        ({"lfops": {"description": f"uses {HF}"}}, "lfops.description"),
        ({"lfops": {"tags": ["ok", HF]}}, "lfops.tags[1]"),
        ({"lfops": {"owner": {"contact": {"token": HF}}}}, "lfops.owner.contact.token"),
        ({"lfops": {HF: "x"}}, "lfops (a key)"),
    ],
)
def test_a_credential_anywhere_in_a_config_is_refused_naming_the_key(repo, doc, field):
    metadata = doc.pop("lfops", None)
    text = yamlio.dump({**BASE, **doc} | ({"lfops": metadata} if metadata else {}))
    config = TrainConfig.parse(text)
    report, version = config.validate(DirFiles(repo))
    assert [str(p) for p in report.errors] == [
        f"{field}: looks like a Hugging Face token; secrets never go into the config repository"
    ]
    assert version == "" and HF not in str(report.errors)


def test_an_aws_secret_key_is_caught_by_its_key_name_too(repo):
    example = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"  # AWS's documented example: too regular on its own
    assert secret_kinds(example) == []
    config = TrainConfig.parse(yamlio.dump({**BASE, "lfops": {"aws_secret_access_key": example}}))
    report, _ = config.validate(DirFiles(repo))
    assert [str(p) for p in report.errors] == [
        "lfops.aws_secret_access_key: looks like an AWS secret access key; secrets never go into the config repository"
    ]


def test_other_problems_are_not_reported_next_to_a_secret_so_it_is_never_quoted(repo):
    config = TrainConfig.parse(yamlio.dump({**BASE, "template": HF, "learning_rate": HF}))
    report, _ = config.validate(DirFiles(repo))
    assert {p.field for p in report.errors} == {"template", "learning_rate"}
    assert HF not in " ".join(str(p) for p in report.problems)


def test_lfops_validate_refuses_a_token_under_an_innocent_key_without_echoing_it(repo, capsys):
    path = repo / "configs" / "x.yaml"
    path.parent.mkdir()
    path.write_text(yamlio.dump({**BASE, "run_name": HF}))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"{path}: run_name: looks like a Hugging Face token; secrets never go into the config repository"
    ]
    assert HF not in out.out + out.err


def test_refuse_secrets_names_each_field():
    refuse_secrets({"message": "Try rank 16", "name": "rank16", "branch": None})
    with pytest.raises(ValidationFailed) as info:
        refuse_secrets({"message": f"token {HF}", "name": "ok"})
    assert str(info.value) == "message: looks like a Hugging Face token; secrets never go into the config repository"


# ---- through save: refused before anything is written (origin's refs and the database unchanged) -----------------


def with_value(env, key: str, value: str) -> bytes:
    config = TrainConfig.parse(env.example_yaml())
    if key.startswith("lfops."):
        config.metadata[key.removeprefix("lfops.")] = value
    else:
        config.args[key] = value
    return config.canonical_yaml().encode()


@pytest.mark.parametrize("key", ["run_name", "lfops.description", "lfops.notes"])
def test_save_refuses_a_token_in_the_config_and_writes_nothing(any_db_env, key):
    env = any_db_env
    alice = env.actor("alice")
    before = snapshot(env)
    with pytest.raises(ValidationFailed) as info:
        env.ws.changes.save(alice, with_value(env, key, HF), "leak", "Innocent change")
    assert str(info.value) == (
        f"leak: {key}: looks like a Hugging Face token; secrets never go into the config repository"
    )
    assert HF not in str(info.value)
    assert snapshot(env) == before


@pytest.mark.parametrize("kind", ["a Hugging Face token", "a private key", "a URL with a password", "a GitHub token"])
def test_save_refuses_a_credential_in_the_message_and_writes_nothing(any_db_env, kind):
    env, secret = any_db_env, SECRETS[kind]
    before = snapshot(env)
    with pytest.raises(ValidationFailed) as info:
        env.ws.changes.save(env.actor("alice"), env.example_yaml(), "msg", f"Retrain\n\nused {secret} to fetch")
    assert str(info.value) == f"message: looks like {kind}; secrets never go into the config repository"
    assert snapshot(env) == before


def test_save_refuses_a_token_in_the_title_name_or_branch(any_db_env):
    env = any_db_env
    alice = env.actor("alice")
    before = snapshot(env)
    for args, field in (
        (("ok", HF), "message"),  # the title: the message's first line
        ((HF, "msg"), "name"),
        (("ok", "msg", f"alice/{HF}"), "branch"),
    ):
        name, message, *branch = args
        with pytest.raises(ValidationFailed, match=f"^{field}: looks like a Hugging Face token") as info:
            env.ws.changes.save(alice, env.example_yaml(), name, message, *branch)
        assert HF not in str(info.value)
    assert snapshot(env) == before
