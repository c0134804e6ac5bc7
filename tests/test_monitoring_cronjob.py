"""The drift checks' CronJob: the manifest (a pure function) and the same manifest on the real control plane of
k8s/dev (kwok nodes): accepted by the API server, and its Job's pods admitted under restricted Pod Security."""

from __future__ import annotations

import pytest

from backend.errors import LfopsError
from backend.monitoring.cronjob import MonitorCronJob, monitor_cronjob
from tests.helpers import wait_for
from tests.k8s_fixtures import create_namespace, delete_namespace, pods_of


def test_the_cronjob_runs_lfops_monitor_check_one_at_a_time_locked_down():
    cron = monitor_cronjob(MonitorCronJob(namespace="lfops", schedule="*/5 * * * *"))
    spec = cron["spec"]
    assert (cron["kind"], spec["schedule"], spec["concurrencyPolicy"]) == ("CronJob", "*/5 * * * *", "Forbid")
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["monitor", "check"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LFOPS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "lfops-database", "key": "url"}
    assert container["envFrom"] == [{"configMapRef": {"name": "lfops-settings"}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"schedule": "hourly"}, "schedule: 'hourly' must be five cron fields (e.g. '*/10 * * * *')"),
        ({"name": "Bad_Name"}, "name: 'Bad_Name' is not a valid CronJob name (at most 52 characters)"),
        ({"image": " "}, "image: must be given"),
    ],
)
def test_bad_cronjob_settings_are_refused_naming_the_field(changes, message):
    with pytest.raises(LfopsError) as err:
        monitor_cronjob(MonitorCronJob(namespace="lfops", **changes))
    assert str(err.value) == message and err.value.field == next(iter(changes))


def test_the_cronjob_is_accepted_and_its_pods_admitted_on_the_control_plane(k8s_cluster):
    from kubernetes import client

    namespace = create_namespace(k8s_cluster, "lfops-mon")
    try:
        with k8s_cluster.client() as api:
            core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
            labels = {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }
            core.patch_namespace(namespace, {"metadata": {"labels": labels}})
            core.create_namespaced_service_account(namespace, {"metadata": {"name": "lfops-webui"}})
            cron = monitor_cronjob(MonitorCronJob(namespace=namespace))
            batch.create_namespaced_cron_job(namespace, cron)
            stored = batch.read_namespaced_cron_job("lfops-monitor", namespace)
            assert stored.spec.schedule == "*/10 * * * *" and stored.spec.concurrency_policy == "Forbid"
            assert stored.spec.job_template.spec.template.spec.containers[0].args == ["monitor", "check"]
            # what `kubectl create job --from=cronjob/lfops-monitor` makes: the Job controller's pods are admitted
            template = cron["spec"]["jobTemplate"]
            job = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "lfops-monitor-now", **template["metadata"]},
                "spec": template["spec"],
            }
            batch.create_namespaced_job(namespace, job)
            wait_for(lambda: pods_of(k8s_cluster, namespace, "lfops-monitor-now"), 60, what="the check's pod")
    finally:
        delete_namespace(k8s_cluster, namespace)


def test_a_cluster_gateway_samples_when_its_target_names_the_database_secret(k8s_cluster):
    """The serving target's `sampling_database_secret` (a cluster profile's serving block): the gateway sidecar loads
    the sampler and reads the store's URL from that Secret; without it, nothing changes. Applied (dry run) on the
    control plane."""
    from kubernetes import dynamic

    from backend.serving import manifests as sm
    from tests.test_serving_manifests import GPU, containers, keys, spec

    _, stored = keys(1)
    plain = containers(sm.build_manifests(spec(), GPU, stored))["gateway"]
    assert "--observer" not in plain["args"] and "env" not in plain
    namespace = create_namespace(k8s_cluster, "lfops-mon")
    try:
        target = sm.ServingTarget(
            **{**GPU.__dict__, "namespace": namespace, "sampling_database_secret": "lfops-database"}
        )
        m = sm.build_manifests(spec(), target, stored)
        gateway = containers(m)["gateway"]
        assert gateway["args"][-2:] == ["--observer", "backend.monitoring.sampler:for_deployment"]
        assert gateway["env"] == [
            {
                "name": "LFOPS_SAMPLING_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": "lfops-database", "key": "url"}},
            }
        ]
        with k8s_cluster.client() as api:
            dyn = dynamic.DynamicClient(api)
            for obj in m.objects():
                resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
                resource.server_side_apply(
                    body=obj,
                    name=obj["metadata"]["name"],
                    namespace=namespace,
                    field_manager="lfops-test",
                    dry_run="All",
                )
    finally:
        delete_namespace(k8s_cluster, namespace)
