"""The admin in a real browser: Debian's Chromium, driven by Playwright, against gunicorn.

Screenshots go to SCREENSHOT_DIR (default test-artifacts/); `make screenshots`
refreshes the ones in the README.
"""

import os
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
def balancer(tmp_path):
    env = balancer_environment(tmp_path, [], ADMIN_PASSWORD=PASSWORD)
    manage(env, "ensure_admin")
    server = Balancer(env, workers=2)
    yield server.url
    server.stop()


@pytest.fixture
def page():
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        yield page
        browser.close()


def test_operator_adds_a_route_in_the_admin_and_traffic_follows(page, balancer, kiwi_backend):
    # The admin answers on the admin hosts; 127.0.0.1 is one.
    page.goto(balancer + "/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#routing-tools")).to_contain_text("Explain a route")
    page.screenshot(path=SCREENSHOTS / "admin-index.png", full_page=True)

    page.goto(balancer + "/admin/routing/pool/add/")
    page.fill("#id_name", "kiwi")
    page.select_option("#id_algorithm", "round_robin")
    page.fill("#id_backends-0-url", kiwi_backend)
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    page.goto(balancer + "/admin/routing/hostrule/add/")
    page.fill("#id_host", "www.kiwi.com")
    page.select_option("#id_pool", label="kiwi")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    expect(page.locator("#result_list")).to_contain_text("www.kiwi.com")
    page.screenshot(path=SCREENSHOTS / "host-rules.png", full_page=True)

    page.goto(balancer + "/admin/routing/explain/")
    page.fill("#id_url", "http://www.kiwi.com/basket?items=3")
    page.click("#explain-form input[type=submit]")
    expect(page.locator("#winning-rule")).to_have_text("host rule www.kiwi.com → kiwi")
    expect(page.locator("#upstream-path")).to_have_text("/basket")
    page.screenshot(path=SCREENSHOTS / "explainer.png", full_page=True)

    page.goto(balancer + "/admin/routing/pool/")
    expect(page.locator("#result_list")).to_contain_text(kiwi_backend)
    page.screenshot(path=SCREENSHOTS / "pools.png", full_page=True)

    # A real request through the balancer now reaches the new backend.
    deadline = time.monotonic() + BOUND
    while True:
        answer = requests.get(balancer + "/", headers={"Host": "www.kiwi.com"}, timeout=5)
        if answer.text == "This is the kiwi application.":
            break
        assert time.monotonic() < deadline, f"still {answer.status_code} {answer.text!r}"
        time.sleep(0.1)
