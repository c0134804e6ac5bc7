"""Kubernetes runner benchmarks against the real control plane of k8s/dev/cluster.sh (start it first).

1. Launch latency: KubernetesRunner.submit() vs a raw `create_namespaced_job` of the same manifest, interleaved in
   the same process and namespace; median of --iterations runs each, and the ratio.
2. One watcher following --jobs concurrent Jobs (kwok runs and completes them): CPU time per status event and
   memory, measured in a child process that does nothing but watch.

    .venv/bin/python bench/k8s_launch.py [--iterations 15] [--jobs 500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

from kubernetes import client  # noqa: E402

from backend.runners.base import Resources, RunSpec, RunStatus  # noqa: E402
from backend.runners.kubernetes import KubernetesRunner, NamespaceWatcher, make_api_client  # noqa: E402
from backend.runners.kubernetes import manifests as km  # noqa: E402
from backend.settings import ClusterProfile  # noqa: E402
from bench.common import ROOT, median, print_table, wait_for  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def spec(run_id: int) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        repo_url="https://git.example.com/configs.git",
        commit=COMMIT,
        config_path="configs/bench.yaml",
        training_yaml="model_name_or_path: m\nstage: sft\noutput_dir: saves/x\n",
        resources=Resources(profile="bench"),
        labels={"config_hash": "c" * 64, "dataset_version": "sha256:" + "d" * 64, "change_request": "1"},
    )


def kubeconfig_path(arg: str) -> str:
    if arg:
        return arg
    out = subprocess.run(["bash", str(ROOT / "k8s/dev/cluster.sh"), "kubeconfig"], capture_output=True, text=True)
    return out.stdout.strip()


def new_namespace(api: client.ApiClient) -> str:
    core = client.CoreV1Api(api)
    name = f"lfops-bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    # pods are refused until the default ServiceAccount exists
    wait_for(
        lambda: core.list_namespaced_service_account(name).items,
        timeout=60,
        interval=0.2,
        what="the namespace's default ServiceAccount (is kube-controller-manager up?)",
    )
    return name


def profile(namespace: str) -> ClusterProfile:
    # no GPUs and an emptyDir for outputs: hundreds of Jobs must fit on the two simulated nodes without a provisioner
    return ClusterProfile(name="bench", namespace=namespace, image="bench:1", gpus_per_node=0, outputs_pvc="")


def bench_launch(kubeconfig: str, iterations: int) -> list[tuple[str, float, float]]:
    api = make_api_client(kubeconfig)
    namespace = new_namespace(api)
    try:
        prof = profile(namespace)
        runner = KubernetesRunner(profiles={"bench": prof}, kubeconfig=kubeconfig)
        batch = client.BatchV1Api(api)
        # the runner records when its Job create returned: "submit until the Job exists"
        job_created: list[float] = []
        real_batch = runner._batch

        def timed_batch() -> client.BatchV1Api:
            api_obj = real_batch()
            create = api_obj.create_namespaced_job

            def create_and_mark(*args: object, **kwargs: object) -> object:
                result = create(*args, **kwargs)
                job_created.append(time.perf_counter())
                return result

            api_obj.create_namespaced_job = create_and_mark
            return api_obj

        runner._batch = timed_batch
        runner.submit(spec(1))  # warm: client, TLS session, watcher threads
        batch.create_namespaced_job(namespace, {**km.build_manifests(spec(2), prof).job})
        raw, until_job, submit = [], [], []
        for i in range(iterations):
            manifest = km.build_manifests(spec(1000 + i), prof).job  # built outside the timing, as a caller would
            t0 = time.perf_counter()
            batch.create_namespaced_job(namespace, manifest)
            raw.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            runner.submit(spec(2000 + i))  # builds its manifests, creates the Job, then the owned ConfigMap
            submit.append(time.perf_counter() - t0)
            until_job.append(job_created[-1] - t0)
        runner.close()
        base = median(raw)
        rows = [
            ("raw create_namespaced_job (same manifest)", base, 1.0),
            ("runner.submit until the Job exists", median(until_job), median(until_job) / base),
            ("runner.submit total (Job + ConfigMap)", median(submit), median(submit) / base),
        ]
        return rows
    finally:
        client.CoreV1Api(api).delete_namespace(namespace, propagation_policy="Background")
        api.close()


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def watch_child(kubeconfig: str, namespace: str, jobs: int) -> None:
    """Child process: follow `jobs` Jobs with one NamespaceWatcher until all have finished; print figures as JSON."""
    rss_before = vm_rss_kib()
    cpu_before = time.process_time()
    watcher = NamespaceWatcher(lambda: make_api_client(kubeconfig), namespace).start()
    watcher.wait_synced(60)
    print("ready", flush=True)
    t0 = time.monotonic()

    done: set[str] = set()
    all_done = threading.Event()

    def on_change(external_id: str, status: RunStatus) -> None:
        if status.state.finished:
            done.add(external_id)
            if len(done) == jobs:
                all_done.set()

    watcher.subscribe(on_change)
    ok = all_done.wait(600)
    elapsed = time.monotonic() - t0
    watcher.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_after = vm_rss_kib()
    print(
        json.dumps(
            {
                "ok": ok,
                "elapsed_s": elapsed,
                "events": watcher.stats["events"],
                "status_changes": watcher.stats["status_changes"],
                "relists": watcher.stats["relists"],
                "watch_cpu_s": sum(watcher.cpu_seconds.values()),
                "process_cpu_s": time.process_time() - cpu_before,
                "rss_before_kib": rss_before,
                "rss_after_kib": rss_after,
                "peak_rss_kib": usage.ru_maxrss,
            }
        ),
        flush=True,
    )


def bench_watch(kubeconfig: str, jobs: int) -> dict:
    api = make_api_client(kubeconfig)
    namespace = new_namespace(api)
    try:
        child = subprocess.Popen(
            [sys.executable, __file__, "--watch-child", namespace, "--jobs", str(jobs), "--kubeconfig", kubeconfig],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("watcher child failed to start")
        batch, prof = client.BatchV1Api(api), profile(namespace)
        t0 = time.perf_counter()
        for i in range(1, jobs + 1):
            batch.create_namespaced_job(namespace, km.build_manifests(spec(i), prof).job, _preload_content=False)
        created_s = time.perf_counter() - t0
        figures = json.loads(child.stdout.readline())
        child.wait(60)
        figures["create_s"] = created_s
        return figures
    finally:
        client.CoreV1Api(api).delete_namespace(namespace, propagation_policy="Background")
        api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("LFOPS_TEST_KUBECONFIG", ""))
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--watch-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    kubeconfig = kubeconfig_path(args.kubeconfig)
    if args.watch_child:
        watch_child(kubeconfig, args.watch_child, args.jobs)
        return

    rows = bench_launch(kubeconfig, args.iterations)
    print_table(
        ["operation", "median ms", "ratio"],
        [(name, f"{seconds * 1000:.2f}", f"{ratio:.2f}") for name, seconds, ratio in rows],
        title=f"Launch latency, median of {args.iterations} (interleaved, same namespace and process)",
    )

    f = bench_watch(kubeconfig, args.jobs)
    table = [
        ("all Jobs seen finished", "yes" if f["ok"] else "NO"),
        ("creating the Jobs took (s)", f"{f['create_s']:.1f}"),
        ("first create to last finish seen (s)", f"{f['elapsed_s']:.1f}"),
        ("watch events (Jobs + Pods)", f"{f['events']}"),
        ("status changes derived", f"{f['status_changes']}"),
        ("relists", f"{f['relists']}"),
        ("watch threads CPU (s)", f"{f['watch_cpu_s']:.2f}"),
        ("CPU per watch event (us)", f"{f['watch_cpu_s'] / max(f['events'], 1) * 1e6:.0f}"),
        ("CPU per status change (us)", f"{f['watch_cpu_s'] / max(f['status_changes'], 1) * 1e6:.0f}"),
        ("whole watcher process CPU (s)", f"{f['process_cpu_s']:.2f}"),
        ("peak RSS (MiB)", f"{f['peak_rss_kib'] / 1024:.1f}"),
        ("RSS before the watcher started (MiB)", f"{f['rss_before_kib'] / 1024:.1f}"),
        ("RSS growth, all Jobs followed (MiB)", f"{(f['rss_after_kib'] - f['rss_before_kib']) / 1024:.1f}"),
    ]
    print_table(
        ["figure", "value"],
        table,
        title=f"One watcher following {args.jobs} concurrent Jobs (kwok runs and completes them)",
    )


if __name__ == "__main__":
    main()
