"""The admin in a real browser: Debian's Chromium, driven by Playwright, against gunicorn.

Screenshots go to SCREENSHOT_DIR (default test-artifacts/); `make screenshots`
refreshes the ones in the README.
"""

import os
import re
import secrets
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from .conftest import (
    PROJECT_ROOT,
    Balancer,
    balancer_environment,
    listening_socket,
    manage,
    pool_rows,
    rule_row,
    start_gunicorn,
    stop,
    url_of,
    wait_until_serving,
)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", PROJECT_ROOT / "test-artifacts"))
PASSWORD = secrets.token_urlsafe(16)
# Chromium as root in a sandboxed, offline machine: no sandbox, no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BOUND = 5


@pytest.fixture
def kiwi_backend():
    sock = listening_socket()
    process = start_gunicorn("backend_app.wsgi", sock, {"APP": "kiwi"})
    wait_until_serving(url_of(sock) + "/healthcheck", process)
    yield url_of(sock)
    stop(process)
    sock.close()


@pytest.fixture
def hostile_backend(wsgi_backend):
    """A backend whose page tries to take over the admin of whoever opens it."""

    def app(environ, start_response):
        body = HOSTILE_PAGE.encode()
        start_response(
            "200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return wsgi_backend(app)


def start_balancer(home, rows):
    """The balancer under gunicorn with these routes and the operator's account."""
    env = balancer_environment(home, rows, ADMIN_PASSWORD=PASSWORD)
    manage(env, "ensure_admin")
    return Balancer(env, workers=2, log_path=home / "balancer.log")


@pytest.fixture
def balancer(tmp_path):
    server = start_balancer(tmp_path, [])
    yield server
    server.stop()


@pytest.fixture
def hostile_balancer(tmp_path, hostile_backend):
    """A balancer that routes /evil/ to the hostile backend."""
    rows = [
        *pool_rows("hostile", [hostile_backend]),
        rule_row("hostile", prefix="/evil", strip_prefix=False),
    ]
    server = start_balancer(tmp_path, rows)
    yield server
    server.stop()


@pytest.fixture
def page():
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        yield context.new_page()
        browser.close()


def log_in(page, balancer):
    """Log in to the admin listener as the operator."""
    page.goto(balancer.admin_url + "/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#routing-tools")).to_contain_text("Explain a route")


def test_operator_adds_a_route_in_the_admin_and_traffic_follows(page, balancer, kiwi_backend):
    log_in(page, balancer)
    page.screenshot(path=SCREENSHOTS / "admin-index.png", full_page=True)
    admin = balancer.admin_url

    page.goto(admin + "/admin/routing/pool/add/")
    page.fill("#id_name", "kiwi")
    page.select_option("#id_algorithm", "round_robin")
    page.fill("#id_backends-0-url", kiwi_backend)
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    page.goto(admin + "/admin/routing/hostrule/add/")
    page.fill("#id_host", "www.kiwi.com")
    page.select_option("#id_pool", label="kiwi")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    expect(page.locator("#result_list")).to_contain_text("www.kiwi.com")
    page.screenshot(path=SCREENSHOTS / "host-rules.png", full_page=True)

    page.goto(admin + "/admin/routing/explain/")
    page.fill("#id_url", "http://www.kiwi.com/basket?items=3")
    page.click("#explain-form input[type=submit]")
    expect(page.locator("#winning-rule")).to_have_text("host rule www.kiwi.com → kiwi")
    expect(page.locator("#upstream-path")).to_have_text("/basket?items=3")
    page.screenshot(path=SCREENSHOTS / "explainer.png", full_page=True)

    page.goto(admin + "/admin/routing/pool/")
    expect(page.locator("#result_list")).to_contain_text(kiwi_backend)
    page.screenshot(path=SCREENSHOTS / "pools.png", full_page=True)

    # A real request through the balancer now reaches the new backend.
    deadline = time.monotonic() + BOUND
    while True:
        answer = requests.get(balancer.url + "/", headers={"Host": "www.kiwi.com"}, timeout=5)
        if answer.text == "This is the kiwi application.":
            break
        assert time.monotonic() < deadline, f"still {answer.status_code} {answer.text!r}"
        time.sleep(0.1)


def test_operator_gives_a_rule_actions_in_the_admin_and_traffic_follows(
    page, balancer, kiwi_backend
):
    log_in(page, balancer)
    admin = balancer.admin_url
    page.goto(admin + "/admin/routing/pool/add/")
    page.fill("#id_name", "kiwi")
    page.fill("#id_backends-0-url", kiwi_backend)
    page.click("input[name=_save]")

    page.goto(admin + "/admin/routing/hostrule/add/")
    page.fill("#id_host", "www.kiwi.com")
    page.select_option("#id_pool", label="kiwi")
    page.get_by_text("Actions", exact=True).click()  # folded while the rule has none
    page.fill("#id_firewall_2", "/private")
    page.fill("#id_rewrite", "^/old/(.*) => /new/\\1\n(broken => /x")
    page.fill("#id_response_headers_0", "X-Frame-Options: DENY")
    page.click("input[name=_save]")
    expect(page.locator(".errorlist")).to_contain_text("Rewrite step 2: the pattern does not")
    page.screenshot(path=SCREENSHOTS / "rule-actions-error.png", full_page=True)

    page.fill("#id_rewrite", "^/old/(.*) => /new/\\1")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    expect(page.locator("#result_list")).to_contain_text("Firewall, Rewrite path")
    page.click("#result_list a:text('www.kiwi.com')")
    expect(page.locator("#id_rewrite")).to_have_value("^/old/(.*) => /new/\\1")
    page.screenshot(path=SCREENSHOTS / "rule-actions.png", full_page=True)

    deadline = time.monotonic() + BOUND
    while True:
        answer = requests.get(
            balancer.url + "/private", headers={"Host": "www.kiwi.com"}, timeout=5
        )
        if answer.status_code == 403:
            break
        assert time.monotonic() < deadline, f"still {answer.status_code} {answer.text!r}"
        time.sleep(0.1)
    assert (answer.text, answer.headers["X-Frame-Options"]) == ("Forbidden", "DENY")


def wait_for_answer(balancer, host, expected):
    """Poll the traffic listener until a host answers with the expected status."""
    deadline = time.monotonic() + BOUND
    while True:
        answer = requests.get(balancer.url + "/", headers={"Host": host}, timeout=5)
        if answer.status_code == expected:
            return answer
        assert time.monotonic() < deadline, f"still {answer.status_code} {answer.text!r}"
        time.sleep(0.1)


def run_backend_action(page, action):
    page.check("#result_list input.action-select")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_newcomer_drains_with_a_confirmation_and_follows_the_links(page, balancer, kiwi_backend):
    log_in(page, balancer)
    admin = balancer.admin_url
    # Rules, pools, backends, then the tools.
    names = page.locator("#content-main caption, #content-main th[scope=row] a").all_inner_texts()
    assert names.index("Host rules") < names.index("Pools") < names.index("Backends")

    page.goto(admin + "/admin/routing/pool/add/")
    page.fill("#id_name", "kiwi")
    page.fill("#id_backends-0-url", kiwi_backend)
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text(": 1 usable backend of 1")
    # No health checker runs here: the backend is unchecked, never "healthy".
    expect(page.locator("#result_list")).to_contain_text("● unchecked")
    expect(page.locator("#health-heartbeat")).to_contain_text("never run")
    page.screenshot(path=SCREENSHOTS / "pools.png", full_page=True)

    page.goto(admin + "/admin/routing/hostrule/add/")
    page.fill("#id_host", "http://www.kiwi.com/")  # pasted from the browser: its host is kept
    page.select_option("#id_pool", label="kiwi")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("Explain http://www.kiwi.com/")
    expect(page.locator("#result_list .live-badge")).to_have_text("live")
    page.screenshot(path=SCREENSHOTS / "host-rules.png", full_page=True)
    wait_for_answer(balancer, "www.kiwi.com", 200)

    # Draining the pool's only backend asks first, saying what it would do.
    page.goto(admin + "/admin/routing/backend/")
    run_backend_action(page, "drain_selected")
    expect(page.locator("#consequences")).to_contain_text(
        "kiwi: 0 usable backends of 1; www.kiwi.com now answers 503"
    )
    page.screenshot(path=SCREENSHOTS / "confirm-drain.png", full_page=True)
    page.click("#confirm-action")
    expect(page.locator(".messagelist")).to_contain_text("www.kiwi.com now answers 503")
    expect(page.locator("#result_list")).to_contain_text("● draining")
    page.screenshot(path=SCREENSHOTS / "backends.png", full_page=True)
    wait_for_answer(balancer, "www.kiwi.com", 503)

    run_backend_action(page, "undrain_selected")
    expect(page.locator(".messagelist")).to_contain_text(": 1 usable backend of 1")
    wait_for_answer(balancer, "www.kiwi.com", 200)
    page.goto(admin + "/admin/routing/hostrule/")
    expect(page.locator("#result_list .live-badge")).to_have_text("live")

    # Pool → rule → explainer, by links.
    page.goto(admin + "/admin/routing/pool/")
    page.click("#result_list a:text('kiwi')")
    page.click(".field-used_by a:text('www.kiwi.com')")
    expect(page.locator("#id_host")).to_have_value("www.kiwi.com")
    page.click("input[name=_save]")
    try:  # back on the list; if not, say what the page said instead
        expect(page).to_have_url(re.compile(r"/admin/routing/hostrule/$"))
    except AssertionError as error:
        raise AssertionError(f"{error}\n{page.locator('#content').inner_text()[:1500]}") from None
    page.click(".messagelist a.explain-link")
    expect(page.locator("#winning-rule")).to_have_text("host rule www.kiwi.com → kiwi")
    expect(page.locator("#explanation")).to_contain_text("not yet checked")
    page.click("#winning-rule a")
    expect(page.locator("#id_host")).to_have_value("www.kiwi.com")


# A backend's page that a logged-in operator opens through the traffic listener.
# Its script tries to add a superuser: on its own origin (where the admin would
# be if both shared a listener), and on the admin's origin with the CSRF
# token's real value (handed in by the test, as if it could read the cookie).
HOSTILE_PAGE = """<!doctype html><title>loading</title><pre id="result"></pre><script>
const params = new URLSearchParams(location.search);
const admin = params.get("admin");
const addUser = "/admin/auth/user/add/";
const form = () => new URLSearchParams({
  username: "mallory", password1: "Zx9-long-pass-word", password2: "Zx9-long-pass-word",
  csrfmiddlewaretoken: params.get("token"), _save: "Save"});
async function attempt(name, action) {
  try { return name + ": " + await action(); } catch (error) { return name + ": " + error.name; }
}
(async () => {
  const results = ["cookies: " + document.cookie];
  results.push(await attempt("own origin GET", async () => (await fetch(addUser)).status));
  results.push(await attempt("own origin POST",
    async () => (await fetch(addUser, {method: "POST", body: form()})).status));
  results.push(await attempt("admin origin read",
    async () => (await fetch(admin + addUser, {credentials: "include"})).status));
  results.push(await attempt("admin origin POST", async () => (await fetch(admin + addUser,
    {method: "POST", mode: "no-cors", credentials: "include", body: form()})).type));
  document.getElementById("result").textContent = results.join("\\n");
  document.title = "done";
})();
</script>"""


def test_a_backends_page_cannot_take_over_the_admin(page, hostile_balancer):
    balancer = hostile_balancer
    log_in(page, balancer)
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "lb_csrftoken")
    hostile = page.context.new_page()
    hostile.goto(f"{balancer.url}/evil/page?admin={balancer.admin_url}&token={token}")
    expect(hostile).to_have_title("done", timeout=BOUND * 1000)
    results = dict(
        line.split(": ", 1) for line in hostile.locator("#result").inner_text().splitlines()
    )
    # Neither admin cookie is readable by script on a backend's page.
    assert "lb_" not in results["cookies"]
    # The traffic listener has no admin: the paths are routed (no rule: 404).
    assert results["own origin GET"] == "404"
    assert results["own origin POST"] == "404"
    # The admin's origin is another: its pages cannot be read, and a write is
    # refused by CSRF's Origin check even with the right token and cookies.
    assert results["admin origin read"] == "TypeError"
    assert results["admin origin POST"] == "opaque"
    deadline = time.monotonic() + BOUND
    while "Origin checking failed" not in balancer.log():
        assert time.monotonic() < deadline, "the cross-origin POST never reached the admin"
        time.sleep(0.1)
    page.goto(balancer.admin_url + "/admin/auth/user/")
    expect(page.locator("#result_list")).to_contain_text("admin")
    expect(page.locator("#result_list")).not_to_contain_text("mallory")
    expect(page.locator(".paginator")).to_contain_text("1 user")
