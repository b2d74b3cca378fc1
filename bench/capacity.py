"""`make bench`'s capacity runs: thousands of clients wait on a slow backend, via balancer or nginx.

Two slow backends (bench/slow_backend.py, one asyncio process each) answer
every request after 100 ms and after 1 s. The balancer runs as production
runs it (`gunicorn lbsite.wsgi` with gunicorn.conf.py and its default
worker, the admin on a port of its own), with one host rule per backend;
nginx proxies to the same backends by the same host names. wrk runs with
256, 1,000 and 2,000 clients on each backend, through the balancer and then
through nginx at each step (BENCH_DURATION seconds each, default 10, with a
10 s timeout per request). For each run: requests/s, p50 and p99 latency,
wrk's errors (socket connect, read, write and timeout, and answers with an
error status), CPU per request, and the proxy's peak memory (the RSS of its
master and workers added up, sampled from /proc during the run), and how
long after wrk stopped the backends still had requests of the proxy's to
answer (a proxy may hold more than it serves; the next run waits for them).
It prints the table, the ratios to nginx and the targets, met or missed, and
writes them as JSON under bench/results/.

BENCH_CAPACITY_CLIENTS (comma-separated) replaces the client counts, for a
short check that it works; targets whose runs are left out are reported as
not measured.
"""

import json
import os
import re
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests

from bench.run import (
    DURATION,
    PROJECT_ROOT,
    RESULTS,
    Target,
    cpu_seconds,
    find_nginx,
    free_port,
    prepare_balancer,
    prepare_nginx,
    process_tree,
    run_wrk,
    start,
    start_balancer,
    stop,
    wait_for,
    wrk_figures,
)

# Name, seconds before each answer, and the Host header that routes to it.
DELAYS = (("100ms", 0.1, "capacity-100ms.test"), ("1s", 1.0, "capacity-1s.test"))
CLIENTS = tuple(
    int(count) for count in os.environ.get("BENCH_CAPACITY_CLIENTS", "256,1000,2000").split(",")
)
PROXIES = ("balancer", "nginx")
WRK_THREADS = 2
# Generous: a request that waits its turn behind others is slow, not lost.
WRK_TIMEOUT_S = 10
# Each client holds a connection to the proxy and, through it, one to the
# backend; every process started here inherits this many open files.
FILE_LIMIT = 65536
RSS_SAMPLE_INTERVAL_S = 0.1
# When wrk stops, a proxy may still hold requests of clients that have gone;
# the next run starts once the backends have had none waiting for a while.
IDLE_POLLS = 3
IDLE_POLL_INTERVAL_S = 0.2
MAX_DRAIN_S = 60
MB = 1_000_000
# wrk opens its connections all at once: listen queues must hold them.
BACKLOG = 4096

NGINX_CONF = """
worker_processes 1;
worker_rlimit_nofile {files};
pid {home}/nginx.pid;
error_log {home}/nginx-error.log;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
{servers}
}}
"""
# One upstream and server per backend. Every upstream connection may stay
# open: nginx at its best, as the balancer keeps its backend connections.
NGINX_SERVER = """
    upstream delay_{name} {{
        server {backend};
        keepalive {keepalive};
    }}
    server {{
        listen 127.0.0.1:{port}{listen_options};
        server_name {host};
        location / {{
            proxy_pass http://delay_{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
"""


def raise_file_limit():
    """Raise this process's open-file limit, which every server and wrk inherit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= FILE_LIMIT:
        return soft
    roomy = hard == resource.RLIM_INFINITY or hard >= FILE_LIMIT
    try:  # past the hard limit, only root may go
        resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, hard if roomy else FILE_LIMIT))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_for_port(port):
    """Wait until a server accepts connections (a slow backend answers too late to ask it)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def drain(backend_ports):
    """Wait until no request waits on the backends; return how long until none did."""
    started = time.monotonic()
    idle_polls, idle_since = 0, None
    while idle_polls < IDLE_POLLS:
        polled = time.monotonic()
        waiting = sum(
            int(requests.get(f"http://127.0.0.1:{port}/waiting", timeout=5).text)
            for port in backend_ports
        )
        if waiting:
            idle_polls, idle_since = 0, None
        else:
            idle_polls, idle_since = idle_polls + 1, idle_since or polled
        if polled - started > MAX_DRAIN_S:
            print(f"  still {waiting} requests waiting after {MAX_DRAIN_S} s", flush=True)
            return polled - started
        time.sleep(IDLE_POLL_INTERVAL_S)
    return idle_since - started


def tree_rss(pid):
    """Return the resident memory in bytes of a process and its children (master and workers)."""
    total = 0
    for each in process_tree(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):  # a worker that just exited
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024  # kB
    return total


class PeakRSS:
    """Sample a process tree's resident memory in the background; keep the highest."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = tree_rss(pid)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.done.wait(RSS_SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, tree_rss(self.pid))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))


def wrk(url, host, clients, pid):
    """Run wrk once with this many clients; return its figures and the proxy's CPU and memory."""
    before = cpu_seconds(pid)
    with PeakRSS(pid) as memory:
        output = run_wrk(url, host, clients, min(WRK_THREADS, clients), WRK_TIMEOUT_S)
    result = wrk_figures(output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    connect, read, write, timeout = map(int, socket_errors.groups()) if socket_errors else (0,) * 4
    errors = {
        "connect": connect,
        "read": read,
        "write": write,
        "timeout": timeout,
        "status": result["errors"],
    }
    requests_done = result["requests"]
    return {
        **result,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "cpu_ms_per_request": (
            (cpu_seconds(pid) - before) * 1000 / requests_done if requests_done else None
        ),
        "peak_rss_mb": memory.peak / MB,
    }


def warm_up(url, host):
    """Open a few connections through a proxy and fill its route table, all workers at once."""
    with ThreadPoolExecutor(16) as pool:
        for answer in pool.map(
            lambda _: requests.get(url, headers={"Host": host}, timeout=WRK_TIMEOUT_S), range(16)
        ):
            answer.raise_for_status()


def main():
    nginx = find_nginx()
    files = raise_file_limit()
    if files != resource.RLIM_INFINITY and files < 4 * max(CLIENTS):
        print(
            f"warning: {files} open files per process may be too few for {max(CLIENTS)} clients "
            "(each takes a connection to the proxy and one to the backend)",
            file=sys.stderr,
        )
    home = Path(tempfile.mkdtemp(prefix="lb-capacity-"))
    processes = []
    try:
        backends = {}
        for name, delay, _host in DELAYS:
            port = free_port()
            processes.append(
                start(
                    [
                        sys.executable,
                        "-m",
                        "bench.slow_backend",
                        "--port",
                        str(port),
                        "--delay",
                        str(delay),
                    ]
                )
            )
            backends[name] = port
        for port in backends.values():
            wait_for_port(port)

        rows = []
        for name, _delay, host in DELAYS:
            pool = f"delay-{name}"
            url = f"http://127.0.0.1:{backends[name]}"
            rows += [
                {"model": "routing.pool", "fields": {"name": pool}},
                {"model": "routing.backend", "fields": {"pool": [pool], "url": url}},
                {"model": "routing.hostrule", "fields": {"host": host, "pool": [pool]}},
            ]
        env = prepare_balancer(home, rows)
        balancer, balancer_port, admin_port = start_balancer(env, home)
        processes.append(balancer)
        wait_for(f"http://127.0.0.1:{admin_port}/healthz")

        nginx_port = free_port()
        prepare_nginx(home)
        # A connection from each client, and to each backend (kept alive between runs).
        connections = (1 + len(DELAYS)) * max(CLIENTS) + 1024
        servers = "".join(
            NGINX_SERVER.format(
                name=name,
                backend=f"127.0.0.1:{backends[name]}",
                keepalive=max(CLIENTS),
                port=nginx_port,
                listen_options=f" default_server backlog={BACKLOG}" if number == 0 else "",
                host=host,
            )
            for number, (name, _delay, host) in enumerate(DELAYS)
        )
        (home / "nginx.conf").write_text(
            NGINX_CONF.format(
                home=home, files=connections + 1024, connections=connections, servers=servers
            )
        )
        nginx_process = start([nginx, "-c", str(home / "nginx.conf"), "-g", "daemon off;"])
        processes.append(nginx_process)
        wait_for_port(nginx_port)

        proxies = {
            "balancer": (f"http://127.0.0.1:{balancer_port}/", balancer.pid),
            "nginx": (f"http://127.0.0.1:{nginx_port}/", nginx_process.pid),
        }
        for url, _pid in proxies.values():
            for _name, _delay, host in DELAYS:
                warm_up(url, host)
        results = {}
        for name, _delay, host in DELAYS:
            for clients in CLIENTS:
                for proxy, (url, pid) in proxies.items():
                    run = wrk(url, host, clients, pid)
                    run["drain_s"] = drain(backends.values())
                    results[f"{proxy}/{name}@{clients}"] = run
                    print(
                        f"  {proxy}, {clients} clients, {name} backend: done "
                        f"(drained {run['drain_s']:.1f} s after wrk stopped)",
                        flush=True,
                    )
        report(results)
    finally:
        stop(processes)
        shutil.rmtree(home, ignore_errors=True)


def report(results):
    lines = [
        f"Capacity: clients waiting on a slow backend, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{DURATION} s per run, wrk timeout {WRK_TIMEOUT_S} s, {os.cpu_count()} cores shared by "
        "wrk, the backends and the proxies: compare only figures from the same run.",
        "errors: wrk's socket errors (connect/read/write/timeout) and answers with an error "
        "status; RSS: the proxy's master and workers added up, the peak sampled during the run;",
        "drain: how long after wrk stopped the proxy still had requests waiting on the backend "
        "(the next run starts after it).",
        "",
        f"{'backend':<9}{'clients':>8}  {'proxy':<10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}  {'c/r/w/t/status':<16}{'CPU ms/req':>11}{'RSS MB':>8}{'drain s':>8}"
        f"{'vs nginx':>10}",
    ]
    for name, _delay, _host in DELAYS:
        for clients in CLIENTS:
            nginx = results[f"nginx/{name}@{clients}"]
            for proxy in PROXIES:
                run = results[f"{proxy}/{name}@{clients}"]
                run["rps_vs_nginx"] = run["rps"] / nginx["rps"] if nginx["rps"] else None
                kinds = "/".join(str(count) for count in run["error_kinds"].values())
                cpu = run["cpu_ms_per_request"]
                ratio = run["rps_vs_nginx"]
                lines.append(
                    f"{name:<9}{clients:>8}  {proxy:<10}{run['rps']:>9.0f}{run['p50_ms']:>9.1f}"
                    f"{run['p99_ms']:>9.1f}{run['errors']:>8}  {kinds:<16}"
                    f"{'' if cpu is None else f'{cpu:.3f}':>11}{run['peak_rss_mb']:>8.0f}"
                    f"{run['drain_s']:>8.1f}"
                    f"{'' if ratio is None else f'{ratio:.2f}':>10}"
                )

    def balancer(name, clients, key):
        run = results.get(f"balancer/{name}@{clients}")
        return None if run is None else run[key]

    targets = [
        Target(
            "2,000 clients on the 1 s backend: balancer req/s vs nginx",
            balancer("1s", 2000, "rps_vs_nginx"),
            ">=",
            0.90,
            "x",
        ),
        Target(
            "2,000 clients on the 1 s backend: balancer errors",
            balancer("1s", 2000, "errors"),
            "<=",
            0,
            digits=0,
        ),
        Target(
            "2,000 clients on the 1 s backend: balancer peak RSS",
            balancer("1s", 2000, "peak_rss_mb"),
            "<=",
            400,
            " MB",
            digits=0,
        ),
        Target(
            "256 clients on the 100 ms backend: balancer req/s vs nginx",
            balancer("100ms", 256, "rps_vs_nginx"),
            ">=",
            0.90,
            "x",
        ),
    ]
    lines += ["", "Targets:", *(f"  {target}" for target in targets)]
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"capacity-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(
        json.dumps(
            {
                "duration_s": DURATION,
                "wrk_timeout_s": WRK_TIMEOUT_S,
                "cores": os.cpu_count(),
                "delays_s": {name: delay for name, delay, _host in DELAYS},
                "clients": CLIENTS,
                "runs": results,
                "summary": {
                    "rps_vs_nginx": {
                        key: run["rps_vs_nginx"]
                        for key, run in results.items()
                        if key.startswith("balancer/")
                    },
                    "targets": [target.as_dict() for target in targets],
                },
            },
            indent=2,
        )
    )
    print(f"\nWritten to {path.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
