"""Benchmark: the REST API of a real `lfops webui`, 16 concurrent clients, each with its own bearer token.

Data: bench/lineage.py's generator at --scale (0.1: 10,000 runs, 100,000 metric rows, 1,000 configs, their merged
change requests with approvals, about 8,000 model versions), loaded into the workspace's SQLite; then `lfops webui`
is started on it as README starts it (WebUI, API and run monitor in one process) and asked over HTTP by --clients
asyncio clients (httpx, keep-alive), for --seconds per request kind after a 2 s warm-up that is not counted:

    list runs (page of 50)     GET /api/v1/runs?limit=50
    lineage of a model         GET /api/v1/lineage/models/NAME:vN   (a random registered version each time)
    health (no auth, no DB)    GET /healthz                         (the HTTP floor, for reference)

"backend call" is the same backend verb called in this process without HTTP (sequentially, median), to show what the
HTTP layer, token check and JSON add. Clients and server share the machine's cores.

    .venv/bin/python bench/api.py [--scale 0.1] [--clients 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import lineage as lineage_bench  # noqa: E402 - bench/lineage.py: the generator and loader


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workspace: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "LFOPS_WORKSPACE": str(workspace), "PYTHONPATH": str(ROOT), "LFOPS_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "webui", "--port", str(port)],
        stdout=open(log, "w"),  # noqa: SIM115 - the server writes to it until it stops
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(workspace.parent),
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lfops webui exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("lfops webui was not ready within 300 s")


async def load(
    base: str, tokens: list[str], path_for: Callable[[random.Random], str], seconds: float, auth: bool = True
) -> tuple[list[float], int]:
    """`len(tokens)` clients asking as fast as they are answered; latencies (ms) after the warm-up, and errors."""
    latencies: list[float] = []
    errors = 0
    warm_until = time.monotonic() + 2.0
    stop_at = warm_until + seconds

    async def client(token: str, seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {token}"} if auth else {}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
            while (now := time.monotonic()) < stop_at:
                started = time.perf_counter()
                response = await http.get(path_for(rng))
                elapsed = (time.perf_counter() - started) * 1000
                if now >= warm_until:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors += 1

    await asyncio.gather(*(client(token, i) for i, token in enumerate(tokens)))
    return latencies, errors


def backend_p50(call: Callable[[random.Random], object], n: int = 200) -> float:
    rng = random.Random(7)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call(rng)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    from backend.auth import Actor
    from backend.settings import Settings
    from backend.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="lfops-bench-api-"))
    workspace = tmp / "ws"
    workspace.mkdir()
    started = time.perf_counter()
    data = lineage_bench.generate(args.scale)
    lineage_bench.load_lfops(f"sqlite:///{workspace / 'lfops.db'}", data, workspace)
    print(
        f"loaded {len(data.runs):,} runs, {len(data.models):,} model versions in {time.perf_counter() - started:.1f} s"
    )

    ws = Workspace(Settings.from_env(workspace))
    users = [Actor(u["id"], u["name"], u["role"], f"{u['name']}@lfops.local") for u in data.users]
    tokens = [ws.tokens.create(users[i % len(users)], f"bench {i}").token for i in range(args.clients)]
    port = free_port()
    started = time.perf_counter()
    server = start_server(workspace, port, tmp / "server.log")
    print(f"lfops webui ready in {time.perf_counter() - started:.1f} s (http://127.0.0.1:{port})")
    base = f"http://127.0.0.1:{port}"
    models = [f"{m['name']}:v{m['version']}" for m in data.models]
    reader = users[0]
    kinds = [
        (
            "list runs (page of 50)",
            lambda rng: "/api/v1/runs?limit=50",
            lambda rng: ws.runs.list(reader, limit=51),
            True,
        ),
        (
            "lineage of a model",
            lambda rng: f"/api/v1/lineage/models/{rng.choice(models)}",
            lambda rng: ws.lineage.of_model(reader, rng.choice(models)),
            True,
        ),
        ("health (no auth, no DB)", lambda rng: "/healthz", None, False),
    ]
    rows = []
    try:
        for name, path_for, call, auth in kinds:
            latencies, errors = asyncio.run(load(base, tokens, path_for, args.seconds, auth))
            alone = backend_p50(call) if call else None
            rows.append(
                (name, len(latencies), len(latencies) / args.seconds, p(latencies, 50), p(latencies, 95), errors, alone)
            )
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{args.clients} concurrent clients, {args.seconds:g} s each, {len(data.runs):,} runs (SQLite), "
        f"{os.cpu_count()} cores\n"
    )
    print("| request | requests | req/s | p50 ms | p95 ms | errors | backend call alone, p50 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n, rate, p50, p95, errors, alone in rows:
        alone_text = f"{alone:.1f}" if alone is not None else "-"
        print(f"| {name} | {n:,} | {rate:.0f} | {p50:.1f} | {p95:.1f} | {errors} | {alone_text} |")


if __name__ == "__main__":
    main()
