"""`make bench`: the balancer beside nginx over the same backends, all on loopback.

Starts two demo backends, the balancer exactly as production runs it
(`gunicorn lbsite.wsgi` with gunicorn.conf.py, access log and metrics on),
and nginx as a reference reverse proxy; runs bounded wrk runs at concurrency
1, 8 and 64 against a backend directly, the balancer by host rule, the
balancer by path rule, the balancer by a host rule with actions (two
request headers set, a query parameter set, a path rewrite), the balancer
by a host rule with a rate limit counted in Redis (a redis-server of the
run's own; the limit is never reached), and nginx.
Four references put the balancer's cost in proportion: a trivial app, a
raw urllib3 proxy and a bare Django view with requests under the same
gunicorn settings (bench/references.py,
bench/django_reference.py), and a Flask proxy calling requests.get, written
and run the tutorial's way (bench/tutorial_reference.py, gthread workers).
They are measured at concurrency 1, then at concurrency 8 taking turns with
the balancer for three rounds, and the CPU figures are the medians of those
rounds. It prints one table and the targets, met or missed, and writes them
as JSON under bench/results/. `make bench` then runs the capacity runs
(bench/capacity.py) and the route-resolution micro-benchmark."""

import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "bench" / "results"
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
CONCURRENCIES = (1, 8, 64)
CPU_CONCURRENCY = 8  # the concurrency at which CPU per request is compared
# The balancer and the references take turns, round after round, so that a
# slow spell of the machine weighs on all of them; medians are reported.
CPU_ROUNDS = 3
# Apps that put the balancer's cost in proportion, with the gunicorn flags they
# run with on top of the balancer's own settings (gunicorn.conf.py).
REFERENCES = {
    "gunicorn_floor": ("bench.references:hello", []),
    "urllib3_proxy": ("bench.references:urllib3_proxy", []),
    "django_requests_proxy": ("bench.django_reference:application", []),
    # As the tutorials run it: threaded workers, whatever the balancer's default.
    "tutorial_flask_proxy": ("bench.tutorial_reference:app", ["--worker-class", "gthread"]),
}
# Environment variables through which requests.get would send the tutorial's
# requests to a proxy instead of the backend; it still looks for them.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The actions of the balancer_actions_rule case: what a rule that shapes
# requests typically does, measured against a plain host rule.
BENCH_ACTIONS = {
    "request_headers": {"set": {"X-Env": "bench", "X-Team": "mango"}},
    "query": {"set": {"source": "bench"}},
    "rewrite": [{"pattern": "^/v1/", "replacement": "/v2/"}],
}
# The rate limit of the balancer_rate_limited_rule case: counted in Redis on
# every request, never reached.
BENCH_RATE_LIMIT = {"requests": 1_000_000, "per": 1, "burst": 1_000_000}
CASES = (
    "direct",
    "balancer_host_rule",
    "balancer_path_rule",
    "balancer_actions_rule",
    "balancer_rate_limited_rule",
    "nginx",
)

NGINX_CONF = """
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    upstream mango {{
        server {backend_a};
        server {backend_b};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mango;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Target:
    """A figure of the run beside its target."""

    name: str
    value: float | None  # None when the run did not measure it
    comparison: str  # "<=" or ">="
    limit: float
    unit: str = ""
    digits: int = 2

    @property
    def met(self):
        if self.value is None:
            return None
        return self.value <= self.limit if self.comparison == "<=" else self.value >= self.limit

    def __str__(self):
        target = f"target {self.comparison} {self.limit:g}{self.unit}"
        if self.value is None:
            return f"{self.name}: not measured in this run ({target})"
        verdict = "met" if self.met else "missed"
        return f"{self.name}: {self.value:.{self.digits}f}{self.unit} ({target}): {verdict}"

    def as_dict(self):
        return {**asdict(self), "met": self.met}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url, host="localhost"):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(url, headers={"Host": host}, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def start(command, env=None, log=None, cwd=PROJECT_ROOT, drop=()):
    """Start a server with these variables added to the environment and those in `drop` removed."""
    environment = {name: value for name, value in os.environ.items() if name not in drop}
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**environment, **(env or {})},
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )


def stop(processes):
    """Stop the servers this run started, last started first."""
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def find_nginx():
    """Return nginx's path, once both it and wrk are known to be installed."""
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install {tool} (make bench does)")
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_redis(port):
    """Start Debian's redis-server on a loopback port, saving nothing; return the process."""
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is missing: apt-get install redis-server (make bench does)")
    redis = start(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port)]
        + ["--save", "", "--appendonly", "no"]
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return redis
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)


def prepare_balancer(home, rows):
    """Give the balancer a database of its own under `home` with these routes; return its env."""
    env = {
        "DJANGO_SETTINGS_MODULE": "lbsite.settings",
        "DATABASE_URL": f"sqlite:///{home / 'db.sqlite3'}",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "STATIC_ROOT": str(home / "static"),
        "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics"),
    }
    (home / "routes.json").write_text(json.dumps(rows))
    for command in (
        # As production has them; checked (W005) by the commands after it.
        ["collectstatic", "--noinput", "--skip-checks"],
        ["migrate", "--noinput"],
        ["loaddata", str(home / "routes.json")],
    ):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return env


def start_balancer(env, home):
    """Start the balancer as production runs it; return the process, traffic and admin ports."""
    port, admin_port = free_port(), free_port()
    log = open(home / "balancer.log", "w")  # noqa: SIM115
    balancer = start(
        [GUNICORN, "lbsite.wsgi", "-b", f"127.0.0.1:{port}"],
        {**env, "ADMIN_BIND": f"127.0.0.1:{admin_port}"},
        log=log,
    )
    return balancer, port, admin_port


def prepare_nginx(home):
    """Make the folders nginx writes to under `home`."""
    for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (home / folder).mkdir()


def process_tree(pid):
    """Return a process and its live children (a gunicorn master and its workers)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    return pids


def cpu_seconds(pid):
    """CPU time of a process and all its live children (gunicorn master and workers)."""
    total = 0
    for each in process_tree(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def parse_latency(text):
    """Return milliseconds from wrk's '1.23ms' / '456.00us' / '1.2s'."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def run_wrk(url, host, clients, threads, timeout_s=None):
    """Run wrk once against url with this Host header; return what it printed.

    It runs DURATION seconds; timeout_s is how long a request may take before
    wrk counts it as a timeout (wrk's own default, 2 s, unless given).
    """
    return subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{DURATION}s",
            *((f"--timeout={timeout_s}s",) if timeout_s else ()),
            "--latency",
            "-H",
            f"Host: {host}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=DURATION + (timeout_s or 2) + 30,
    ).stdout


def wrk_figures(output):
    """Return wrk's requests, rate, p50 and p99, and its answers of status 400 and above."""
    # wrk's "Non-2xx or 3xx responses" counts answers with a status of 400 and above.
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": parse_latency(re.search(r"\s50%\s+(\S+)", output).group(1)),
        "p99_ms": parse_latency(re.search(r"\s99%\s+(\S+)", output).group(1)),
        "errors": int(status.group(1)) if status else 0,
    }


def wrk(url, host, concurrency, pid=None):
    before = cpu_seconds(pid) if pid else None
    result = wrk_figures(run_wrk(url, host, concurrency, threads=min(concurrency, 2)))
    if pid:
        result["cpu_ms_per_request"] = (cpu_seconds(pid) - before) * 1000 / result["requests"]
    return result


def main():
    nginx = find_nginx()
    home = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    processes = []
    try:
        backends = []
        for _ in range(2):
            port = free_port()
            processes.append(
                start(
                    [
                        GUNICORN,
                        "backend_app.wsgi",
                        "-b",
                        f"127.0.0.1:{port}",
                        "--workers",
                        "1",
                        "--threads",
                        "16",
                    ],
                    {"APP": "mango"},
                )
            )
            backends.append(f"127.0.0.1:{port}")
        for backend in backends:
            wait_for(f"http://{backend}/healthcheck")

        rows = [
            {"model": "routing.pool", "fields": {"name": "mango"}},
            *(
                {"model": "routing.backend", "fields": {"pool": ["mango"], "url": f"http://{b}"}}
                for b in backends
            ),
            {"model": "routing.hostrule", "fields": {"host": "bench.test", "pool": ["mango"]}},
            {"model": "routing.pathrule", "fields": {"prefix": "/bench", "pool": ["mango"]}},
            {
                "model": "routing.hostrule",
                "fields": {"host": "actions.bench.test", "pool": ["mango"], **BENCH_ACTIONS},
            },
            {
                "model": "routing.hostrule",
                "fields": {
                    "host": "ratelimit.bench.test",
                    "pool": ["mango"],
                    "rate_limit": BENCH_RATE_LIMIT,
                },
            },
        ]
        redis_port = free_port()
        processes.append(start_redis(redis_port))
        env = prepare_balancer(home, rows)
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        balancer, balancer_port, admin_port = start_balancer(env, home)
        processes.append(balancer)
        wait_for(f"http://127.0.0.1:{admin_port}/healthz")

        nginx_port = free_port()
        prepare_nginx(home)
        (home / "nginx.conf").write_text(
            NGINX_CONF.format(
                home=home, port=nginx_port, backend_a=backends[0], backend_b=backends[1]
            )
        )
        processes.append(start([nginx, "-c", str(home / "nginx.conf"), "-g", "daemon off;"]))
        wait_for(f"http://127.0.0.1:{nginx_port}/")

        references = {}
        for name, (app, flags) in REFERENCES.items():
            port = free_port()
            reference = start(
                [GUNICORN, app, "-b", f"127.0.0.1:{port}", *flags],
                {"BENCH_BACKENDS": ",".join(backends)},
                drop=(*PROXY_VARIABLES, *(name.upper() for name in PROXY_VARIABLES)),
            )
            processes.append(reference)
            references[name] = (f"http://127.0.0.1:{port}/", "bench.test", reference.pid)
            wait_for(references[name][0])

        cases = {
            "direct": (f"http://{backends[0]}/", backends[0], processes[0].pid),
            "balancer_host_rule": (
                f"http://127.0.0.1:{balancer_port}/",
                "bench.test",
                balancer.pid,
            ),
            "balancer_path_rule": (
                f"http://127.0.0.1:{balancer_port}/bench/",
                "localhost",
                balancer.pid,
            ),
            "balancer_actions_rule": (
                f"http://127.0.0.1:{balancer_port}/v1/x?page=1",
                "actions.bench.test",
                balancer.pid,
            ),
            "balancer_rate_limited_rule": (
                f"http://127.0.0.1:{balancer_port}/",
                "ratelimit.bench.test",
                balancer.pid,
            ),
            "nginx": (f"http://127.0.0.1:{nginx_port}/", "bench.test", None),
        }
        # Warm every path (connections, route table) before measuring.
        for url, host, _pid in [*cases.values(), *references.values()]:
            for _ in range(50):
                requests.get(url, headers={"Host": host}, timeout=5)
        results = {}
        for concurrency in CONCURRENCIES:
            for name, (url, host, pid) in cases.items():
                results[f"{name}@{concurrency}"] = wrk(url, host, concurrency, pid)
                print(f"  {name} at concurrency {concurrency}: done", flush=True)
        for name, (url, host, pid) in references.items():
            results[f"{name}@1"] = wrk(url, host, 1, pid)
            print(f"  reference {name} at concurrency 1: done", flush=True)
        rounds = []
        for number in range(CPU_ROUNDS):
            contenders = {
                name: cases[name]
                for name in (
                    "balancer_host_rule",
                    "balancer_actions_rule",
                    "balancer_rate_limited_rule",
                )
            }
            contenders.update(references)
            rounds.append(
                {
                    name: wrk(url, host, CPU_CONCURRENCY, pid)
                    for name, (url, host, pid) in contenders.items()
                }
            )
            print(f"  CPU round {number + 1} of {CPU_ROUNDS}: done", flush=True)
        propagation = measure_propagation(env, home, balancer_port)
        report(results, rounds, propagation, measure_traffic_sample())
    finally:
        stop(processes)
        shutil.rmtree(home, ignore_errors=True)


def measure_propagation(env, home, port):
    """Return seconds from an edit's commit until every worker routes by it (new connections)."""
    row = [{"model": "routing.hostrule", "fields": {"host": "new.bench.test", "pool": ["mango"]}}]
    (home / "edit.json").write_text(json.dumps(row))
    subprocess.run(
        [sys.executable, "manage.py", "loaddata", str(home / "edit.json")],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    committed = time.monotonic()
    url = f"http://127.0.0.1:{port}/"
    while True:
        answers = {
            requests.get(
                url, headers={"Host": "new.bench.test", "Connection": "close"}, timeout=5
            ).status_code
            for _ in range(20)
        }
        if answers == {200}:
            return time.monotonic() - committed
        if time.monotonic() - committed > 30:
            raise SystemExit("the edit did not reach every worker in 30 s")


def measure_traffic_sample():
    """Return the traffic sample's microseconds per request (bench/traffic_sample.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.traffic_sample"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def report(results, rounds, propagation, sample_us):
    lines = [
        f"Load balancer benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{DURATION} s per run, {os.cpu_count()} cores shared by wrk, the backends and the "
        "proxies: compare only figures from the same run.",
        "",
        f"{'case':<22}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/req':>12}{'vs nginx':>10}{'vs direct':>10}{'errors':>8}",
    ]
    summary = {}
    for concurrency in CONCURRENCIES:
        nginx = results[f"nginx@{concurrency}"]
        direct = results[f"direct@{concurrency}"]
        for name in CASES:
            run = results[f"{name}@{concurrency}"]
            run["rps_vs_nginx"] = run["rps"] / nginx["rps"]
            run["rps_vs_direct"] = run["rps"] / direct["rps"]
            run["added_p50_ms"] = run["p50_ms"] - direct["p50_ms"]
            cpu = run.get("cpu_ms_per_request")
            lines.append(
                f"{name:<22}{concurrency:>5}{run['rps']:>10.0f}{run['p50_ms']:>9.2f}"
                f"{run['p99_ms']:>9.2f}{'' if cpu is None else f'{cpu:.3f}':>12}"
                f"{run['rps_vs_nginx']:>10.2f}{run['rps_vs_direct']:>10.2f}{run['errors']:>8}"
            )
    lines += [
        "",
        "References, under the balancer's gunicorn settings (the tutorial's proxy with gthread "
        "workers):",
    ]
    for name in REFERENCES:
        run = results[f"{name}@1"]
        run["added_p50_ms"] = run["p50_ms"] - results["direct@1"]["p50_ms"]
        lines.append(
            f"{name:<22}{1:>5}{run['rps']:>10.0f}{run['p50_ms']:>9.2f}"
            f"{run['p99_ms']:>9.2f}{run['cpu_ms_per_request']:>12.3f}{'':>20}{run['errors']:>8}"
        )
    host = "balancer_host_rule"
    actions = "balancer_actions_rule"
    limited = "balancer_rate_limited_rule"
    names = [host, actions, limited, *REFERENCES]
    lines += [
        "",
        f"CPU ms per request at concurrency {CPU_CONCURRENCY}, {CPU_ROUNDS} rounds taking turns:",
        "".join(f"{name:>24}" for name in names),
        *("".join(f"{run[name]['cpu_ms_per_request']:>24.3f}" for name in names) for run in rounds),
    ]
    cpu = {
        name: statistics.median(run[name]["cpu_ms_per_request"] for run in rounds) for name in names
    }

    def ratio_to(reference, name=host):
        return statistics.median(
            run[name]["cpu_ms_per_request"] / run[reference]["cpu_ms_per_request"] for run in rounds
        )

    summary = {
        "cpu_ms_per_request": cpu[host],
        **{f"{name}_cpu_ms_per_request": cpu[name] for name in REFERENCES},
        "cpu_vs_tutorial_flask_proxy": ratio_to("tutorial_flask_proxy"),
        "cpu_vs_urllib3_proxy": ratio_to("urllib3_proxy"),
        "cpu_vs_django_requests_proxy": ratio_to("django_requests_proxy"),
        "actions_rule_cpu_ms_per_request": cpu[actions],
        "actions_rule_cpu_vs_plain_rule": ratio_to(host, actions),
        "rate_limited_rule_cpu_ms_per_request": cpu[limited],
        "rate_limited_rule_cpu_vs_plain_rule": ratio_to(host, limited),
        "throughput_vs_nginx_at_64": results[f"{host}@64"]["rps_vs_nginx"],
        "added_p50_ms_at_1": results[f"{host}@1"]["added_p50_ms"],
        **{
            f"{name}_added_p50_ms_at_1": results[f"{name}@1"]["added_p50_ms"] for name in REFERENCES
        },
        "edit_propagation_ms": propagation * 1000,
        "traffic_sample_us_per_request": sample_us,
        "traffic_sample_share_of_cpu": sample_us / 1000 / cpu[host],
    }
    targets = [
        Target(
            "balancer CPU per proxied GET vs the tutorial's Flask + requests.get proxy",
            summary["cpu_vs_tutorial_flask_proxy"],
            "<=",
            0.5,
            "x",
        ),
        Target(
            "balancer CPU per proxied GET vs the raw urllib3 proxy",
            summary["cpu_vs_urllib3_proxy"],
            "<=",
            1.25,
            "x",
        ),
        Target(
            "CPU per request of a rule with two header sets, a query set and a rewrite "
            "vs a plain host rule",
            summary["actions_rule_cpu_vs_plain_rule"],
            "<=",
            1.10,
            "x",
        ),
        Target(
            "CPU per request of a rule with a rate limit counted in Redis vs a plain host rule",
            summary["rate_limited_rule_cpu_vs_plain_rule"],
            "<=",
            1.15,
            "x",
        ),
        Target(
            "throughput vs nginx at concurrency 64",
            summary["throughput_vs_nginx_at_64"],
            ">=",
            0.30,
            "x",
        ),
        Target(
            "added p50 latency at concurrency 1", summary["added_p50_ms_at_1"], "<=", 0.8, " ms"
        ),
        Target(
            "the traffic sample's CPU per request (Traffic page and impact preview) "
            "vs the balancer's CPU per proxied GET",
            summary["traffic_sample_share_of_cpu"] * 100,
            "<=",
            3,
            " %",
        ),
        Target(
            "an edit until every worker routes by it",
            summary["edit_propagation_ms"],
            "<=",
            1000,
            " ms",
            digits=0,
        ),
    ]
    summary["targets"] = [target.as_dict() for target in targets]
    lines += [
        "",
        f"Balancer CPU per proxied GET (concurrency {CPU_CONCURRENCY}, median of "
        f"{CPU_ROUNDS} rounds): {cpu[host]:.3f} ms; the tutorial's Flask proxy "
        f"{cpu['tutorial_flask_proxy']:.3f} ms, the raw urllib3 proxy "
        f"{cpu['urllib3_proxy']:.3f} ms, the bare Django view with requests "
        f"{cpu['django_requests_proxy']:.3f} ms "
        f"({summary['cpu_vs_django_requests_proxy']:.2f}x), gunicorn's own floor, a trivial app, "
        f"{cpu['gunicorn_floor']:.3f} ms",
        f"A host rule with actions: {cpu[actions]:.3f} ms "
        f"({summary['actions_rule_cpu_vs_plain_rule']:.3f}x the plain host rule)",
        f"A host rule with a rate limit counted in Redis: {cpu[limited]:.3f} ms "
        f"({summary['rate_limited_rule_cpu_vs_plain_rule']:.3f}x the plain host rule)",
        f"The traffic sample (two counts in memory per request, timed in process): "
        f"{sample_us:.2f} us per request, "
        f"{summary['traffic_sample_share_of_cpu'] * 100:.2f} % of the balancer's CPU per GET",
        "Added p50 latency at concurrency 1 in this run: the tutorial's Flask proxy "
        f"{summary['tutorial_flask_proxy_added_p50_ms_at_1']:.2f} ms, the raw urllib3 proxy "
        f"{summary['urllib3_proxy_added_p50_ms_at_1']:.2f} ms, the bare Django view "
        f"{summary['django_requests_proxy_added_p50_ms_at_1']:.2f} ms, gunicorn's trivial app "
        f"{summary['gunicorn_floor_added_p50_ms_at_1']:.2f} ms",
        "",
        "Targets (CPU ratios: medians of the rounds' ratios):",
        *(f"  {target}" for target in targets),
    ]
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"proxy-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(
        json.dumps(
            {
                "duration_s": DURATION,
                "cores": os.cpu_count(),
                "runs": results,
                "cpu_rounds": rounds,
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"\nWritten to {path.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
