"""The Kubernetes runner against a real control plane (k8s/dev/cluster.sh): kube-apiserver, controller-manager and
scheduler v1.36 with etcd, and kwok's simulated GPU nodes (gpu-node-0/1, 8 nvidia.com/gpu each) that move pods to
Running and Succeeded (or Failed for pods labelled lfops.test/fail) and serve pod logs.

Nothing here is mocked: the Job controller creates the pods, the scheduler places them by nvidia.com/gpu, the garbage
collector removes owned objects, and failures of the network are real TCP failures through a proxy.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from backend.errors import ClusterUnreachable, Conflict, LfopsError, ValidationFailed
from backend.runners.base import Resources, RunSpec, RunState
from backend.runners.kubernetes import KubernetesRunner
from backend.runners.kubernetes import manifests as km
from tests.helpers import wait_for
from tests.k8s_fixtures import (
    TRAINING_LOG,
    FlakyProxy,
    fake_gpu_node,
    job_names,
    kubeconfig_via,
    pods_of,
    server_address,
)

pytestmark = pytest.mark.slow
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
GPU_NODES = {"gpu-node-0", "gpu-node-1"}


def make_spec(run_id: int, nodes: int = 1, gpus: int = 1) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        repo_url="https://git.example.com/configs.git",
        commit=COMMIT,
        config_path="configs/tiny.yaml",
        training_yaml="model_name_or_path: m\nstage: sft\ndo_train: true\noutput_dir: saves/x\n",
        resources=Resources(gpus_per_node=gpus, nodes=nodes, profile="test"),
        labels={"config_hash": "c" * 64, "dataset_version": "sha256:" + "d" * 64, "change_request": "7"},
    )


@pytest.fixture
def runner_for(k8s_ns):
    """runner_for(**profile overrides) -> a KubernetesRunner on the test namespace; all are closed afterwards."""
    made = []

    def make(kubeconfig: str | None = None, more: dict | None = None, **profile):
        profiles = {"test": k8s_ns.profile(**profile)}
        profiles |= {name: k8s_ns.profile(name=name, **values) for name, values in (more or {}).items()}
        runner = KubernetesRunner(profiles=profiles, kubeconfig=kubeconfig or k8s_ns.cluster.kubeconfig)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


def test_one_node_job_is_scheduled_on_a_gpu_node_succeeds_and_serves_logs(k8s_ns, runner_for):
    runner = runner_for()
    seen = []
    runner.subscribe(lambda eid, status: seen.append(status.state))
    eid = runner.submit(make_spec(1, gpus=2))
    assert eid == f"{k8s_ns.name}/lfops-run-1"
    final = runner.wait(eid, timeout=60)
    assert final.state == RunState.SUCCEEDED, final
    assert seen[-1] == RunState.SUCCEEDED and RunState.PENDING in seen
    (pod,) = pods_of(k8s_ns.cluster, k8s_ns.name, "lfops-run-1")
    assert pod.spec.node_name in GPU_NODES
    assert pod.spec.containers[0].resources.limits == {"nvidia.com/gpu": "2"}
    assert pod.metadata.labels["lfops.io/run-id"] == "1" and pod.metadata.labels["lfops.io/commit"] == COMMIT[:12]
    assert list(runner.logs(eid)) == TRAINING_LOG
    # the ConfigMap with the training YAML exists, is owned by the Job (garbage-collected with it), immutable
    with k8s_ns.cluster.client() as api:
        cm = client.CoreV1Api(api).read_namespaced_config_map("lfops-run-1-config", k8s_ns.name)
        job = client.BatchV1Api(api).read_namespaced_job("lfops-run-1", k8s_ns.name)
    assert cm.immutable and "output_dir: /outputs/model" in cm.data["train.yaml"]
    assert [(o.kind, o.uid) for o in cm.metadata.owner_references] == [("Job", job.metadata.uid)]
    assert job.metadata.annotations["lfops.io/config-hash"] == "c" * 64


def test_status_and_logs_reach_the_run_record_through_runs(k8s_ns, runner_for, env):
    from backend.runs import Runs
    from tests.runs_fixtures import approved_merge

    runner = runner_for()
    runs = Runs(env.ws.store, env.ws.repo, runner)
    cr, merge = approved_merge(env, "k8s-launch")
    alice = env.actor("alice")
    view = runs.launch(alice, cr, resources=Resources(gpus_per_node=1, profile="test"))
    assert view.backend == "kubernetes" and view.external_id.endswith(f"/lfops-run-{view.id}")
    done = runs.wait(alice, view.id, timeout=60)
    assert done.status == "succeeded", done
    assert list(runs.logs(alice, view.id)) == TRAINING_LOG
    with k8s_ns.cluster.client() as api:
        job = client.BatchV1Api(api).read_namespaced_job(f"lfops-run-{view.id}", k8s_ns.name)
    # lineage on the Job matches the run record
    assert job.metadata.annotations["lfops.io/commit"] == merge == done.commit
    assert job.metadata.annotations["lfops.io/config-hash"] == done.config_hash
    assert job.metadata.labels["lfops.io/change-request"] == str(cr)


def test_the_local_app_launches_on_the_cluster_when_a_profile_is_chosen(k8s_ns, runner_for, env):
    """The app's default runner stays local; a launch naming a cluster profile goes to Kubernetes, and tracking,
    logs and cancel follow each run's own backend."""
    from backend.runners.local import LocalRunner
    from backend.runs import Runs
    from tests.runs_fixtures import approved_merge

    cluster = runner_for()
    local = LocalRunner(env.ws.settings.runs_dir, env.ws.repo)
    runs = Runs(env.ws.store, env.ws.repo, local, other_runners=lambda name: cluster)
    cr, _merge = approved_merge(env, "k8s-by-profile")
    alice = env.actor("alice")
    view = runs.launch(alice, cr, resources=Resources(gpus_per_node=1, profile="test"))
    assert view.backend == "kubernetes" and runs.runner is local
    assert runs.wait(alice, view.id, timeout=60).status == "succeeded"
    assert list(runs.logs(alice, view.id)) == TRAINING_LOG
    with pytest.raises(LfopsError, match="'slurm' is not configured"):
        runs.runner_for("slurm")


def test_cancel_through_runs_records_who_cancelled(k8s_ns, runner_for, env):
    from backend.runs import Runs
    from tests.runs_fixtures import approved_merge

    runner = runner_for(pod_annotations={"lfops.test/run-duration": "600s"})
    runs = Runs(env.ws.store, env.ws.repo, runner)
    cr, _ = approved_merge(env, "k8s-cancel")
    alice = env.actor("alice")
    view = runs.launch(alice, cr, resources=Resources(gpus_per_node=1, profile="test"))
    wait_for(lambda: runs.advance_run(view.id) and runs.get(alice, view.id).status == "running", 30, what="running")
    done = runs.cancel(alice, view.id)
    assert (done.status, done.reason) == ("cancelled", "cancelled by alice")
    wait_for(lambda: not job_names(k8s_ns.cluster, k8s_ns.name), 30, what="Job deleted")


def test_following_logs_waits_for_the_pod_and_ends_with_the_run(k8s_ns, runner_for):
    runner = runner_for(pod_annotations={"lfops.test/run-duration": "2s"})
    eid = runner.submit(make_spec(13))
    lines = runner.logs(eid, follow=True)  # the pod does not exist yet
    assert list(lines) == TRAINING_LOG  # kwok never closes a followed stream: the runner ends it after the run
    assert runner.status(eid).state == RunState.SUCCEEDED


def test_too_many_gpus_stay_pending_with_the_reason_until_a_bigger_node_joins(k8s_ns, runner_for):
    runner = runner_for()
    eid = runner.submit(make_spec(2, gpus=16))
    watcher = runner.watcher(k8s_ns.name)
    wait_for(lambda: "Insufficient nvidia.com/gpu" in runner.status(eid).reason, 30, what="unschedulable reason")
    status = runner.status(eid)
    assert status.state == RunState.PENDING
    assert "Unschedulable" in status.reason and "Insufficient nvidia.com/gpu" in status.reason
    node = f"gpu-node-big-{uuid.uuid4().hex[:6]}"
    with k8s_ns.cluster.client() as api:
        core = client.CoreV1Api(api)
        core.create_node(fake_gpu_node(node, 16))
        try:
            final = runner.wait(eid, timeout=90)
            assert final.state == RunState.SUCCEEDED, final
            (pod,) = pods_of(k8s_ns.cluster, k8s_ns.name, "lfops-run-2")
            assert pod.spec.node_name == node
        finally:
            core.delete_node(node)
    assert watcher.stats["relists"] == 2  # one list per kind; everything else came from the watch


def test_a_gpu_quota_keeps_the_run_pending_with_the_quota_message(k8s_ns, runner_for):
    with k8s_ns.cluster.client() as api:
        client.CoreV1Api(api).create_namespaced_resource_quota(
            k8s_ns.name, {"metadata": {"name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}}
        )
    runner = runner_for()
    eid = runner.submit(make_spec(15, gpus=2))
    # no pod can be created at all: the reason comes from the Job controller's warning event
    wait_for(lambda: "exceeded quota" in runner.status(eid).reason, 30, what="quota reason")
    status = runner.status(eid)
    assert status.state == RunState.PENDING and status.reason.startswith("FailedCreate: ")
    assert "requests.nvidia.com/gpu=2" in status.reason


def test_several_nodes_get_an_indexed_job_with_torchrun_env_and_a_resolvable_master(k8s_ns, runner_for):
    runner = runner_for(pod_annotations={"lfops.test/run-duration": "3s"})
    eid = runner.submit(make_spec(3, nodes=2, gpus=8))
    wait_for(lambda: runner.status(eid).state == RunState.RUNNING, 30, what="both pods running")
    assert runner.status(eid).reason.startswith("2/2 pods running")
    pods = pods_of(k8s_ns.cluster, k8s_ns.name, "lfops-run-3")
    assert len(pods) == 2 and {p.spec.node_name for p in pods} == GPU_NODES  # 8 GPUs each: one pod per node
    by_index = {p.metadata.annotations[km.COMPLETION_INDEX_ANNOTATION]: p for p in pods}
    assert sorted(by_index) == ["0", "1"]
    for index, pod in by_index.items():
        env = {e.name: e for e in pod.spec.containers[0].env}
        # NODE_RANK is read from the annotation that carries this pod's completion index
        path = env["NODE_RANK"].value_from.field_ref.field_path
        assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == index
        assert env["NNODES"].value == "2" and env["NPROC_PER_NODE"].value == "8" and env["FORCE_TORCHRUN"].value == "1"
        assert env["MASTER_ADDR"].value == f"lfops-run-3-0.lfops-run-3.{k8s_ns.name}.svc"
        assert env["MASTER_PORT"].value == "29500"
        # the pod's DNS name is <hostname>.<subdomain>.<namespace>.svc
        assert (pod.spec.hostname, pod.spec.subdomain) == (f"lfops-run-3-{index}", "lfops-run-3")
    with k8s_ns.cluster.client() as api:
        svc = client.CoreV1Api(api).read_namespaced_service("lfops-run-3", k8s_ns.name)
        assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses

        def master_endpoint():
            slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
                k8s_ns.name, label_selector="kubernetes.io/service-name=lfops-run-3"
            )
            return [e for s in slices.items for e in s.endpoints or [] if e.hostname == "lfops-run-3-0"]

        # cluster DNS answers <job>-0.<service> from the EndpointSlice entry with that hostname and pod 0's IP
        (endpoint,) = wait_for(master_endpoint, 30, what="EndpointSlice entry for pod 0")
        assert endpoint.addresses == [by_index["0"].status.pod_ip]
    assert runner.wait(eid, timeout=60).state == RunState.SUCCEEDED


def test_a_failing_pod_fails_the_run_with_its_reason(k8s_ns, runner_for):
    runner = runner_for(
        pod_labels={"lfops.test/fail": "true"},
        pod_annotations={
            "lfops.test/fail-reason": "OOMKilled",
            "lfops.test/fail-message": "CUDA out of memory",
            "lfops.test/fail-exit-code": "137",
        },
    )
    eid = runner.submit(make_spec(4))
    final = runner.wait(eid, timeout=60)
    assert final.state == RunState.FAILED
    assert "BackoffLimitExceeded" in final.reason
    assert "OOMKilled (exit code 137): CUDA out of memory" in final.reason


def test_cancel_deletes_the_job_and_its_pods(k8s_ns, runner_for):
    runner = runner_for(pod_annotations={"lfops.test/run-duration": "60s"})
    eid = runner.submit(make_spec(5))
    wait_for(lambda: runner.status(eid).state == RunState.RUNNING, 30, what="running")
    runner.cancel(eid, reason="cancelled by alice")
    final = runner.wait(eid, timeout=30)
    assert (final.state, final.reason) == (RunState.CANCELLED, "cancelled by alice")
    wait_for(lambda: not job_names(k8s_ns.cluster, k8s_ns.name), 30, what="Job deleted")
    wait_for(lambda: not pods_of(k8s_ns.cluster, k8s_ns.name, "lfops-run-5"), 30, what="pods deleted")
    runner.cancel(eid)  # cancelling again is harmless


def test_api_server_unreachable_during_submit_is_a_clear_error_and_retries_never_duplicate(
    k8s_ns, runner_for, tmp_path
):
    proxy = FlakyProxy(server_address(k8s_ns.cluster.kubeconfig))
    try:
        runner = runner_for(kubeconfig_via(k8s_ns.cluster.kubeconfig, proxy.port, tmp_path / "kubeconfig"))
        spec = make_spec(6)
        # 1. the API server is down: nothing is created, the error says what and that a retry is safe
        proxy.set_mode("down")
        with pytest.raises(ClusterUnreachable) as err:
            runner.submit(spec)
        message = str(err.value)
        assert f"cannot reach the Kubernetes API server at https://127.0.0.1:{proxy.port}" in message
        assert "retrying the launch is safe" in message and "\n" not in message
        assert job_names(k8s_ns.cluster, k8s_ns.name) == []
        # 2. the server creates the Job but its answer is lost (a timeout after the fact)
        proxy.set_mode("up")
        assert runner.status(f"{k8s_ns.name}/lfops-run-999").state == RunState.LOST  # warms the connection
        proxy.set_mode("lose_replies")
        with pytest.raises(ClusterUnreachable):
            runner.submit(spec)
        assert job_names(k8s_ns.cluster, k8s_ns.name) == ["lfops-run-6"]
        # 3. the retry finds its own Job (409 + same run id), finishes the submit, and creates nothing twice
        proxy.set_mode("up")
        assert runner.submit(spec) == f"{k8s_ns.name}/lfops-run-6"
        assert runner.submit(spec) == f"{k8s_ns.name}/lfops-run-6"
        assert job_names(k8s_ns.cluster, k8s_ns.name) == ["lfops-run-6"]
        assert runner.wait(f"{k8s_ns.name}/lfops-run-6", timeout=60).state == RunState.SUCCEEDED
    finally:
        proxy.close()


def test_a_job_of_the_same_name_from_another_run_is_a_conflict(k8s_ns, runner_for):
    runner = runner_for()
    runner.submit(make_spec(7))
    other = RunSpec(**{**make_spec(7).__dict__, "commit": "f" * 40})
    with pytest.raises(Conflict, match="job .*/lfops-run-7: already exists for another run"):
        runner.submit(other)
    assert job_names(k8s_ns.cluster, k8s_ns.name) == ["lfops-run-7"]


def test_a_submit_whose_id_was_never_recorded_is_found_by_its_run_id(k8s_ns, runner_for):
    runner = runner_for()
    resources = make_spec(11).resources
    assert runner.find_submitted(11, resources) is None  # nothing reached the cluster
    external_id = runner.submit(make_spec(11))
    assert runner.find_submitted(11, resources) == external_id
    assert runner.find_submitted(12, resources) is None
    assert runner.find_submitted(11, Resources(profile="no-such-profile")) is None


def test_invalid_requests_are_refused_before_any_api_call(k8s_ns, runner_for):
    runner = runner_for()
    with pytest.raises(ValidationFailed, match="resources.nodes: must be at least 1"):
        runner.submit(make_spec(8, nodes=0))
    assert job_names(k8s_ns.cluster, k8s_ns.name) == []


def test_a_dropped_watch_resumes_from_its_resource_version_without_missing_the_end(k8s_ns, runner_for):
    runner = runner_for(pod_annotations={"lfops.test/run-duration": "2s"})
    eid = runner.submit(make_spec(9))
    watcher = runner.watcher(k8s_ns.name)
    wait_for(lambda: runner.status(eid).state == RunState.RUNNING, 30, what="running")
    relists = watcher.stats["relists"]
    watcher.stop()  # the connections go away while the run finishes
    assert not watcher.alive
    with k8s_ns.cluster.client() as api:
        batch = client.BatchV1Api(api)
        wait_for(lambda: batch.read_namespaced_job("lfops-run-9", k8s_ns.name).status.succeeded, 30, what="done")
    assert watcher.status("lfops-run-9").state == RunState.RUNNING  # it has not heard yet
    watcher.start()
    assert runner.wait(eid, timeout=30).state == RunState.SUCCEEDED
    assert watcher.stats["relists"] == relists  # resumed from the resourceVersion, no relist needed


def test_a_connection_cut_mid_watch_is_resumed(k8s_ns, runner_for):
    runner = runner_for(pod_annotations={"lfops.test/run-duration": "2s"})
    eid = runner.submit(make_spec(10))
    watcher = runner.watcher(k8s_ns.name)
    wait_for(lambda: runner.status(eid).state == RunState.RUNNING, 30, what="running")
    reconnects = watcher.stats["reconnects"]
    watcher.reconnect()  # as if the network dropped both streams
    assert runner.wait(eid, timeout=30).state == RunState.SUCCEEDED
    assert watcher.stats["reconnects"] > reconnects


def test_a_relist_after_410_gone_catches_up_on_what_happened_while_away(k8s_ns, runner_for):
    """What the watcher does when the API server answers 410 Gone (its resourceVersion was compacted away): list
    again. A young dev cluster's watch cache still holds every version, so no real 410 can be provoked here; the
    test drops the versions exactly as the 410 branch does and checks the relist against real changes."""
    runner = runner_for(
        pod_annotations={"lfops.test/run-duration": "2s"},
        more={"long": {"pod_annotations": {"lfops.test/run-duration": "600s"}}},
    )
    long = RunSpec(**{**make_spec(14).__dict__, "resources": Resources(gpus_per_node=1, profile="long")})
    finishing, doomed = runner.submit(make_spec(11)), runner.submit(long)
    watcher = runner.watcher(k8s_ns.name)
    wait_for(lambda: runner.status(finishing).state == RunState.RUNNING, 30, what="running")
    wait_for(lambda: runner.status(doomed).state == RunState.RUNNING, 30, what="running")
    watcher.stop()
    with k8s_ns.cluster.client() as api:  # while nobody watches: one run ends, the other's Job is deleted by hand
        batch = client.BatchV1Api(api)
        batch.delete_namespaced_job("lfops-run-14", k8s_ns.name, propagation_policy="Background")
        wait_for(lambda: batch.read_namespaced_job("lfops-run-11", k8s_ns.name).status.succeeded, 30, what="done")
        wait_for(lambda: "lfops-run-14" not in job_names(k8s_ns.cluster, k8s_ns.name), 30, what="deleted")
    relists = watcher.stats["relists"]
    watcher.resource_versions = dict.fromkeys(watcher.KINDS)  # what the 410 branch of the watch loop sets
    watcher.start()
    assert runner.wait(finishing, timeout=30).state == RunState.SUCCEEDED
    gone = runner.wait(doomed, timeout=30)
    assert (gone.state, gone.reason) == (RunState.CANCELLED, "the Job was deleted outside lfops")
    assert watcher.stats["relists"] == relists + 2  # one list of Jobs, one of Pods


def test_manifests_pass_server_side_validation_of_kubernetes_1_36(k8s_ns, runner_for):
    runner = runner_for(
        hub_token_secret="hf-token",
        kueue_queue="team-a",
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"nvidia.com/gpu.present": "true"},
        clone_image="alpine/git:2.47.2",
        repo_credentials_secret="git-creds",
        priority_class="",
    )
    m = runner.manifests(make_spec(12, nodes=4, gpus=8))
    with k8s_ns.cluster.client() as api:
        client.BatchV1Api(api).create_namespaced_job(k8s_ns.name, m.job, dry_run="All")
        client.CoreV1Api(api).create_namespaced_config_map(k8s_ns.name, m.config_map, dry_run="All")
        client.CoreV1Api(api).create_namespaced_service(k8s_ns.name, m.service, dry_run="All")
    assert job_names(k8s_ns.cluster, k8s_ns.name) == []


def test_cli_launch_with_a_profile_runs_on_the_cluster(k8s_ns, env, monkeypatch, capsys):
    """`lfops launch CR --profile P --wait`, as an admin types it, with settings from the environment."""
    import json

    from backend.cli import main
    from tests.runs_fixtures import approved_merge

    cr, merge = approved_merge(env, "k8s-cli")
    profiles = {"gpu": {"namespace": k8s_ns.name, "image": "lfops/train:test", "gpus_per_node": 1}}
    monkeypatch.setenv("LFOPS_CLUSTER_PROFILES", json.dumps(profiles))
    monkeypatch.setenv("LFOPS_KUBECONFIG", k8s_ns.cluster.kubeconfig)
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    ws = str(env.ws.settings.workspace)
    code = main(["--workspace", ws, "--user", "alice", "launch", str(cr), "--profile", "nope"])
    assert code == 2 and "profile: 'nope' is not a cluster profile; known: gpu" in capsys.readouterr().err
    code = main(
        ["--workspace", ws, "--user", "alice", "launch", str(cr), "--profile", "gpu", "--wait", "--timeout", "90"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "succeeded" in out and "kubernetes" in out
    with k8s_ns.cluster.client() as api:
        jobs = client.BatchV1Api(api).list_namespaced_job(k8s_ns.name).items
    assert [j.metadata.annotations["lfops.io/commit"] for j in jobs] == [merge]


def test_webui_launch_offers_cluster_profiles_previews_and_launches(k8s_ns, template_workspace, tmp_path):
    """The Train tab's Launch: the admin's cluster profiles are offered, the objects are shown for review, and the
    launch runs as a Job on the real control plane."""
    import os

    from tests.runs_fixtures import approved_merge
    from tests.webui_fixtures import build_in_process, plain, request_for
    from tests.workspace_fixtures import make_env

    env = make_env(template_workspace, tmp_path / "ws")
    settings = env.ws.settings.model_copy(
        update={"kubeconfig": k8s_ns.cluster.kubeconfig, "cluster_profiles": {"gpu": k8s_ns.profile(name="gpu")}}
    )
    env.ws.settings = settings
    cwd = os.getcwd()
    try:
        web = build_in_process(env)
        train = web.app.train
        cr, merge = approved_merge(env, "webui-k8s")
        alice = request_for("alice")
        manifest, message = train.on_preview(cr, "gpu", 2, 2, alice)
        assert message == "" and manifest["visible"] is True
        assert "completionMode: Indexed" in manifest["value"] and f"lfops.io/commit: {merge}" in manifest["value"]
        _, message = train.on_preview(cr, "", 1, 1, alice)
        assert "choose a cluster profile" in plain(message)
        assert "GPUs per node must be 0 or more" in plain(train.on_launch(cr, "gpu", -1, 1, request=alice))
        result = train.on_launch(cr, "gpu", 1, 1, request=alice)
        assert result.startswith("**Run #") and "kubernetes" in result, result
        run_id = int(result.split("#")[1].split()[0])
        done = env.ws.runs.wait(env.actor("alice"), run_id, timeout=60)
        assert done.status == "succeeded" and done.backend == "kubernetes"
    finally:
        os.chdir(cwd)
        env.ws.store.dispose()
