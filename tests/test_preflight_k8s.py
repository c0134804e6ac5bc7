"""The bf16 config of LlamaBoard's defaults, end to end through the WebUI's own handlers: flagged at Save (a note),
shown in Review, refused at Launch on this machine (no GPU) with the reason and the fix and nothing changed, and
launched on a GPU cluster profile, where it runs as a Job on the real control plane of k8s/dev (kwok's GPU nodes)."""

from __future__ import annotations

import os

import pytest

from tests.snapshots import snapshot
from tests.webui_fixtures import build_in_process, plain, request_for
from tests.workspace_fixtures import make_env
from webui import llamaboard as lb

pytestmark = pytest.mark.slow


def test_llamaboard_default_bf16_is_noted_at_save_refused_here_and_launched_on_a_gpu_profile(
    k8s_ns, template_workspace, tmp_path
):
    env = make_env(template_workspace, tmp_path / "ws")
    profile = k8s_ns.profile(name="gpu", gpu_model="H100", gpu_memory_gib=80, gpu_compute_capability="9.0")
    env.ws.settings = env.ws.settings.model_copy(
        update={"kubeconfig": k8s_ns.cluster.kubeconfig, "cluster_profiles": {"gpu": profile}}
    )
    cwd = os.getcwd()
    try:
        web = build_in_process(env)
        train, review = web.app.train, web.app.review
        # LlamaBoard's form as it opens, with the model and data chosen: compute type stays its default, bf16
        data = lb.form_values(
            web.board,
            {
                "top.model_name": "Custom",
                "top.model_path": str(env.ws.settings.models_dir / "tiny-llama"),
                "train.dataset": ["demo_arith"],
                "train.output_dir": "train_2026-01-01-00-00-00",  # the page fills it in on load
                "train.max_samples": "16",
                "train.cutoff_len": 64,
            },
        )
        assert web.board.elem("train.compute_type").value == "bf16"
        data[train.name], data[train.message] = "defaults", "LlamaBoard's defaults"
        text, saved = train.on_save(data, request_for("alice"))
        assert text.startswith("**Saved: change request #"), text
        assert "bf16: true" in saved["value"].splitlines()
        shown = plain(text)
        assert (
            "not runnable: bf16 needs a GPU with bf16 support (compute capability 8.0+); this machine has no GPU; "
            "fix: set compute type fp32 (bf16: false), or launch on profile gpu" in shown
        )
        assert "profile gpu (1 x H100 (80 GiB, compute 9.0)): runnable, ~" in shown
        cr = int(shown.split("change request #")[1].split("*")[0])

        shown_cr = review.on_show(cr, False, False, request_for("rita"))
        validation = shown_cr[-6]  # ..., validation, reviews, then the four offered buttons
        assert "Launch targets:" in validation and "preflight: runs on profile gpu" in plain(validation)
        rita = env.actor("rita")
        env.ws.changes.approve(rita, cr, "ok")
        env.ws.changes.merge(rita, cr)

        before = snapshot(env)
        refused = plain(train.on_launch(cr, "", 1, 1, request=request_for("alice")))
        assert refused.startswith("**Not launched:**"), refused
        assert (
            "launch refused on this machine (local runner): bf16 needs a GPU with bf16 support (compute capability "
            "8.0+); this machine has no GPU; fix: set compute type fp32 (bf16: false), or launch on profile gpu"
        ) in refused
        assert snapshot(env) == before  # nothing recorded, nothing started

        result = train.on_launch(cr, "gpu", 1, 1, request=request_for("alice"))
        assert result.startswith("**Run #") and "kubernetes" in result, result
        run_id = int(result.split("#")[1].split()[0])
        done = env.ws.runs.wait(env.actor("alice"), run_id, timeout=90)
        assert done.status == "succeeded" and done.backend == "kubernetes"
        assert "bf16: true" in env.ws.repo.read(done.commit, done.config_path).decode()  # trained as merged
    finally:
        os.chdir(cwd)
        env.ws.runs.close()
        env.ws.store.dispose()
