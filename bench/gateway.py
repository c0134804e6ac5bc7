"""Benchmark: what the serving gateway costs.

1. Overhead in front of a real model server: LLaMA-Factory's `llamafactory-cli api` serving the demo tiny model,
   started by lfops' local serving (gateway process + model server, as deployed). The same requests go to the
   model server directly (with its own key) and through the gateway, interleaved one by one: p50/p95 latency of
   non-streamed chat completions and time to first token (first content chunk) of streamed ones.
2. Throughput in front of a stub upstream (tests/serving_stub.py, its own uvicorn process): requests/s with 64
   concurrent keep-alive clients and the resident memory of the process in front, for the stub called directly,
   the stub behind a plain uvicorn + httpx reverse proxy (no keys, no metrics: the baseline), and the stub behind
   the gateway process. The load generator is raw asyncio sockets in this process. Median of --runs runs each,
   interleaved.

    .venv/bin/python bench/gateway.py [--runs 3] [--seconds 4] [--requests 30] [--skip-model]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository first on the path

from backend.serving.keys import new_api_key, write_keys_file  # noqa: E402
from bench.common import ROOT, free_port, median, percentile, print_table, wait_for  # noqa: E402

CONCURRENCY = 64
CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "What is 2 plus 3?"}],
    "max_tokens": 8,
    "do_sample": False,
}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


# ---- child processes: the stub and the baseline proxy ---------------------------------------------------------------


def serve_stub(port: int) -> None:
    import uvicorn

    from tests.serving_stub import StubModelServer

    uvicorn.run(StubModelServer(chunks=8), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_plain_proxy(port: int, upstream: str) -> None:
    """The baseline: uvicorn + one pooled httpx client, body and headers passed on, nothing else."""
    import uvicorn

    client: httpx.AsyncClient | None = None

    async def app(scope, receive, send):
        nonlocal client
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=512))
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"host", b"content-length", b"connection")]
        resp = await client.request(scope["method"], upstream + scope["path"], content=body, headers=headers)
        out = [
            (k.encode(), v.encode())
            for k, v in resp.headers.items()
            if k not in ("content-length", "connection", "date", "server", "transfer-encoding")
        ]
        out.append((b"content-length", str(len(resp.content)).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def spawn(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def listening() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"{args} ended: {proc.stderr.read().decode()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return True  # any answer (even 404) means it listens
        return False

    try:
        wait_for(listening, timeout=60, interval=0.1, what=f"{args} to listen")
    except AssertionError:
        proc.kill()
        raise SystemExit(f"{args} did not start") from None
    return proc


# ---- load generator -------------------------------------------------------------------------------------------------

_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


async def _worker(port: int, request: bytes, deadline: float, counts: dict[bytes, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            m = _LENGTH.search(head)
            if m:
                await reader.readexactly(int(m.group(1)))
            status = head[9:12]
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()


def load(port: int, key: str, seconds: float) -> tuple[float, dict[str, int]]:
    body = json.dumps(CHAT).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    counts: dict[bytes, int] = {}

    async def run() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_worker(port, request, deadline, counts) for _ in range(CONCURRENCY)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    ok = counts.get(b"200", 0)
    return ok / elapsed, {k.decode(): v for k, v in counts.items()}


# ---- part 1: overhead against a real model server ------------------------------------------------------------------


def ttft(client: httpx.Client, url: str) -> float:
    """Until the first chunk with content (LLaMA-Factory sends an empty role chunk first); the stream is read out."""
    started = time.perf_counter()
    first = None
    with client.stream("POST", url, json={**CHAT, "stream": True}) as r:
        for line in r.iter_lines():
            if first is None and line.startswith("data:") and '"content": "' in line and '"content": ""' not in line:
                first = time.perf_counter() - started
    return first if first is not None else time.perf_counter() - started  # no content: the whole stream


def model_overhead(requests: int, runs: int, work: Path) -> list[tuple[str, float, float, float, float]]:
    from backend import demo
    from backend.serving.local_server import LocalDeployment, ModelServerSpec

    model = demo.make_tiny_model(work / "tiny-llama")
    key, stored = new_api_key()
    deployment = LocalDeployment(work / "serving", "bench", ready_timeout_s=300)
    spec = ModelServerSpec(version_dir=str(model), model_version="tiny-llama:v1", kind="full")
    status = deployment.start(spec, free_port(), [stored])
    try:
        upstream = json.loads((deployment.dir / "upstream.json").read_text())
        direct = httpx.Client(
            base_url=upstream["url"], headers={"authorization": f"Bearer {upstream['api_key']}"}, timeout=120
        )
        gateway = httpx.Client(
            base_url=status.endpoint.removesuffix("/v1"), headers={"authorization": f"Bearer {key}"}, timeout=120
        )
        for c in (direct, gateway):  # warm up both paths (connections, first generation)
            for _ in range(3):
                c.post("/v1/chat/completions", json=CHAT).raise_for_status()
        # per run: p50 and p95 of each path; reported: the median over runs of each
        per_run: dict[tuple[str, str, int], list[float]] = {}
        for _ in range(runs):
            lat: dict[str, list[float]] = {"direct": [], "gateway": []}
            first: dict[str, list[float]] = {"direct": [], "gateway": []}
            for i in range(requests):
                order = [("direct", direct), ("gateway", gateway)]
                for name, c in order if i % 2 == 0 else reversed(order):
                    started = time.perf_counter()
                    c.post("/v1/chat/completions", json=CHAT).raise_for_status()
                    lat[name].append(time.perf_counter() - started)
                    first[name].append(ttft(c, "/v1/chat/completions"))
            for label, data in (("non-streamed latency", lat), ("streamed time to first token", first)):
                for name in ("direct", "gateway"):
                    for q in (50, 95):
                        per_run.setdefault((label, name, q), []).append(percentile(data[name], q) * 1000)
        rows = []
        for label in ("non-streamed latency", "streamed time to first token"):
            d50, g50, d95, g95 = (
                median(per_run[(label, name, q)])
                for name, q in (("direct", 50), ("gateway", 50), ("direct", 95), ("gateway", 95))
            )
            rows.append((label, d50, g50, d95, g95))
        return rows
    finally:
        deployment.stop()


# ---- part 2: throughput in front of a stub -------------------------------------------------------------------------


def throughput(runs: int, seconds: float, work: Path) -> dict[str, tuple[float, float, float, dict]]:
    key, stored = new_api_key()
    write_keys_file(work / "keys.json", [stored])
    stub_port, proxy_port, gw_port = free_port(), free_port(), free_port()
    procs = {}
    try:
        procs["stub"] = spawn([__file__, "--serve", "stub", "--port", str(stub_port)], stub_port)
        procs["plain proxy"] = spawn(
            [__file__, "--serve", "proxy", "--port", str(proxy_port), "--upstream", f"http://127.0.0.1:{stub_port}"],
            proxy_port,
        )
        procs["gateway"] = spawn(
            [
                "-m",
                "backend.serving.gateway",
                "--deployment",
                "bench",
                "--model-version",
                "stub:v1",
                "--upstream",
                f"http://127.0.0.1:{stub_port}",
                "--keys-file",
                str(work / "keys.json"),
                "--port",
                str(gw_port),
            ],
            gw_port,
        )
        ports = {"stub": stub_port, "plain proxy": proxy_port, "gateway": gw_port}
        for port in ports.values():  # warm-up: connections, code paths
            load(port, key, 0.5)
        results: dict[str, list[float]] = {name: [] for name in ports}
        cpu_us: dict[str, list[float]] = {name: [] for name in ports}
        statuses: dict[str, dict] = {}
        for _ in range(runs):
            for name, port in ports.items():
                front = psutil.Process(procs[name].pid)
                before = sum(front.cpu_times()[:2])
                rps, counts = load(port, key, seconds)
                used = sum(front.cpu_times()[:2]) - before
                results[name].append(rps)
                cpu_us[name].append(used / max(1, counts.get("200", 0)) * 1e6)
                statuses[name] = counts
        return {
            name: (
                median(values),
                median(cpu_us[name]),
                psutil.Process(procs[name].pid).memory_info().rss / 2**20,
                statuses[name],
            )
            for name, values in results.items()
        }
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--requests", type=int, default=30, help="requests per path and run (model-server overhead)")
    p.add_argument("--skip-model", action="store_true", help="only the stub throughput part")
    p.add_argument("--serve", choices=["stub", "proxy"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve == "stub":
        return serve_stub(args.port)
    if args.serve == "proxy":
        return serve_plain_proxy(args.port, args.upstream)

    print(f"# machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="lfops-bench-gw-") as tmp:
        work = Path(tmp)
        if not args.skip_model:
            rows = model_overhead(args.requests, args.runs, work)
            print_table(
                ["measure", "direct p50", "gateway p50", "added p50", "direct p95", "gateway p95"],
                [
                    [label, f"{d50:.1f}", f"{g50:.1f}", f"{g50 - d50:+.1f} ({(g50 - d50) / d50 * 100:+.1f}%)"]
                    + [f"{d95:.1f}", f"{g95:.1f}"]
                    for label, d50, g50, d95, g95 in rows
                ],
                title=f"Gateway overhead in front of llamafactory-cli api (tiny model, CPU, {args.requests} requests "
                f"each per run, interleaved, median of {args.runs} runs), ms:",
            )
        res = throughput(args.runs, args.seconds, work)
        base = res["plain proxy"][0]
        print_table(
            ["path", "requests/s", "vs plain proxy", "CPU per request in the process in front (µs)"]
            + ["RSS of the process in front (MiB)", "statuses (last run)"],
            [
                [name, f"{rps:,.0f}", f"{rps / base:.2f}x", f"{cpu:,.0f}", f"{rss:.0f}", counts]
                for name, (rps, cpu, rss, counts) in ((n, res[n]) for n in ("stub", "plain proxy", "gateway"))
            ],
            align="lrrrrl",
            title=f"In front of a stub upstream: {CONCURRENCY} concurrent keep-alive clients, {args.seconds:g} s, "
            f"median of {args.runs} runs:",
        )
    print(f"\n# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
