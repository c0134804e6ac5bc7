"""One secret-argument rule: config validation and the WebUI's Save to repo refuse exactly the same keys."""

from __future__ import annotations

import json
import os

import pytest

from backend.config import TrainConfig, schema
from backend.secret_args import SECRET_ARG_NAMES, is_secret_arg
from tests.webui_fixtures import build_in_process
from tests.workspace_fixtures import make_env
from webui import llamaboard as lb

# LLaMA-Factory's own secret arguments, then names only the suffix rule catches (not LLaMA-Factory arguments).
SECRETS = [*sorted(SECRET_ARG_NAMES), "wandb_api_key", "db_password", "webhook_secret", "gitlab_token"]
# Arguments whose names come close to a secret's and are not secrets.
NOT_SECRETS = ["max_new_tokens", "add_special_tokens", "use_fast_tokenizer", "tokenized_path", "hub_model_id"]
SECRET_REASON = "secrets never go into"


@pytest.fixture(scope="module")
def web(template_workspace, tmp_path_factory):
    cwd = os.getcwd()
    env = make_env(template_workspace, tmp_path_factory.mktemp("secrets") / "ws")
    try:
        yield build_in_process(env)
    finally:
        env.ws.runs.stop_monitor()
        env.ws.store.dispose()
        os.chdir(cwd)


def validation_problems(web, key: str) -> dict[str, str]:
    config = TrainConfig.parse(web.env.example_yaml(), "example")
    config.args[key] = "value-1234"
    return {p.field: p.reason for p in config.check_args()}


def form_problems(web, key: str) -> dict[str, str]:
    values = {
        "top.lang": "en",
        "top.model_name": "Custom",
        "top.model_path": str(web.env.ws.settings.models_dir / "tiny-llama"),
        "train.dataset": ["demo_arith"],
        "train.output_dir": "train_2025-01-01-00-00-00",
        "train.extra_args": json.dumps({key: "value-1234"}),
    }
    data = lb.form_values(web.board, values)
    return {p.field: p.reason for p in lb.repo_args(web.board, data, "secrets", web.ctx.workdir.root).problems}


def test_the_rule_covers_both_former_rules():
    assert all(is_secret_arg(key) for key in SECRETS)
    assert not any(is_secret_arg(key) for key in NOT_SECRETS)
    # every LLaMA-Factory argument the suffix rule catches is a known secret argument, and the other way round
    assert {key for key in schema() if is_secret_arg(key)} == set(SECRET_ARG_NAMES)


@pytest.mark.parametrize("key", SECRETS)
def test_validation_and_the_webui_form_refuse_every_secret_key(web, key):
    validation, form = validation_problems(web, key), form_problems(web, key)
    assert key in validation and key in form
    assert SECRET_REASON in form[key]
    if key in schema():  # other names are refused first as not being LLaMA-Factory arguments at all
        assert SECRET_REASON in validation[key]


@pytest.mark.parametrize("key", [k for k in NOT_SECRETS if k in schema()])
def test_neither_refuses_an_argument_that_only_looks_like_a_secret(web, key):
    validation, form = validation_problems(web, key), form_problems(web, key)
    assert SECRET_REASON not in validation.get(key, "") and SECRET_REASON not in form.get(key, "")
