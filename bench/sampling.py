"""Benchmark: what request sampling adds to the gateway's latency.

Four gateway processes (as lfops runs them) in front of one stub model server (tests/serving_stub.py, its own
process, answering at once so the gateway's own cost is what is measured): sampling off (no observer, twice: the
second shows how much two identical gateways differ on this machine), sampling on at the default rate (10%), and on
at 100% (every request redacted, queued and written to SQLite in the metadata store). Sequential keep-alive chat
completions, interleaved request by request over the four in a random order, --requests each per run; p50 and p95
per run, the median over --runs runs, and the added latency against "off" side by side; and the CPU time each
gateway process spent per request (less disturbed by other work on a shared machine than wall time).

    .venv/bin/python bench/sampling.py [--runs 5] [--requests 400]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

from backend.monitoring import samples  # noqa: E402
from backend.monitoring.sampler import DATABASE_VARIABLE, OBSERVER  # noqa: E402
from backend.serving.keys import new_api_key, write_keys_file  # noqa: E402
from backend.store import Store  # noqa: E402
from bench.common import free_port, median, percentile, print_table  # noqa: E402
from bench.gateway import ENV, spawn  # noqa: E402

PROMPT = "What is 12 times 7? Please answer briefly; my colleague bob@example.org asked."


def gateway(tmp: Path, name: str, stub_url: str, keys: Path, observe: bool, db_url: str) -> tuple[object, str]:
    port = free_port()
    upstream = tmp / f"{name}-upstream.json"
    upstream.write_text(json.dumps({"url": stub_url, "model_version": "tiny-sft:v1"}))
    args = ["-m", "backend.serving.gateway", "--deployment", name, "--upstream-file", str(upstream)]
    args += ["--keys-file", str(keys), "--port", str(port)]
    if observe:
        args += ["--observer", OBSERVER]
    ENV[DATABASE_VARIABLE] = db_url
    return spawn(args, port), f"http://127.0.0.1:{port}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--requests", type=int, default=400)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lfops-bench-sampling-"))
    db_url = f"sqlite:///{tmp}/lfops.db"
    store = Store(db_url)
    store.upgrade()
    with store.session() as s:
        samples.set_policy(s, "on-10", samples.Policy(rate=0.1), "bench")
        samples.set_policy(s, "on-100", samples.Policy(rate=1.0), "bench")
    key, stored = new_api_key()
    keys = tmp / "keys.json"
    write_keys_file(keys, [stored])
    stub_port = free_port()
    code = f"from bench.gateway import serve_stub; serve_stub({stub_port})"
    procs = [spawn(["-c", code], stub_port)]
    stub_url = f"http://127.0.0.1:{stub_port}"
    paths = {}
    gateways = {}
    for name, observe in (("off", False), ("off-2", False), ("on-10", True), ("on-100", True)):
        proc, url = gateway(tmp, name, stub_url, keys, observe, db_url)
        procs.append(proc)
        paths[name] = url
        gateways[name] = psutil.Process(proc.pid)
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}
    headers = {"authorization": f"Bearer {key}"}
    p50: dict[str, list[float]] = {n: [] for n in paths}
    p95: dict[str, list[float]] = {n: [] for n in paths}
    try:
        clients = {n: httpx.Client(base_url=u, headers=headers, timeout=30) for n, u in paths.items()}
        time.sleep(11)  # every sampler has read its policy (re-read every 10 s)
        for client in clients.values():  # warm-up: connections, first-use imports
            for _ in range(50):
                client.post("/v1/chat/completions", json=body).raise_for_status()
        cpu_before = {n: sum(g.cpu_times()[:2]) for n, g in gateways.items()}
        for _run in range(args.runs):
            times: dict[str, list[float]] = {n: [] for n in paths}
            order = list(clients.items())
            for _ in range(args.requests):
                random.shuffle(order)  # no gateway always goes first (or right after another's write)
                for name, client in order:
                    started = time.perf_counter()
                    client.post("/v1/chat/completions", json=body).raise_for_status()
                    times[name].append((time.perf_counter() - started) * 1000)
            for name in paths:
                p50[name].append(percentile(times[name], 50))
                p95[name].append(percentile(times[name], 95))
        time.sleep(1.5)  # the last samples written
        total = args.runs * args.requests
        cpu_ms = {n: (sum(g.cpu_times()[:2]) - cpu_before[n]) * 1000 / total for n, g in gateways.items()}
        with store.session() as s:
            stored_counts = {n: samples.count(s, n) for n in paths}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)
    base50, base95 = median(p50["off"]), median(p95["off"])
    rows = []
    labels = (
        ("off", "sampling off"),
        ("off-2", "sampling off, a second gateway (the noise)"),
        ("on-10", "on, 10% (default)"),
        ("on-100", "on, 100%"),
    )
    for name, label in labels:
        m50, m95 = median(p50[name]), median(p95[name])
        rows.append(
            [
                label,
                f"{m50:.2f}",
                f"{(m50 - base50) / base50:+.1%}" if name != "off" else "—",
                f"{m95:.2f}",
                f"{(m95 - base95) / base95:+.1%}" if name != "off" else "—",
                f"{cpu_ms[name]:.2f}",
                f"{(cpu_ms[name] - cpu_ms['off']) / cpu_ms['off']:+.1%}" if name != "off" else "—",
                str(stored_counts[name]),
            ]
        )
    print(
        f"\nGateway latency in front of the stub, {args.requests} sequential requests per path and run, interleaved; "
        f"median of {args.runs} runs, ms\n"
    )
    headers = ["gateway", "p50", "added at p50", "p95", "added at p95", "CPU ms/request", "added CPU", "samples stored"]
    print_table(headers, rows)


if __name__ == "__main__":
    main()
