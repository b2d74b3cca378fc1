"""The Traffic page in a real browser, drawing real traffic through gunicorn.

The screenshot goes to SCREENSHOT_DIR, as in test_browser.py (`make screenshots`).
"""

import re
import threading
import time

import pytest
import requests
from playwright.sync_api import expect

from . import test_browser
from .conftest import Balancer, balancer_environment, manage, pool_rows, rule_row
from .test_browser import PASSWORD, SCREENSHOTS, log_in

page = test_browser.page  # the same Chromium page
# Requests a second, as the summary shows them.
A_RATE = re.compile(r"^\d+(\.\d+)?$")
BOUND = 15  # seconds: the workers write every second, the page redraws every second


@pytest.fixture
def balancer(tmp_path, demo_backends):
    rows = [
        *pool_rows("mango", demo_backends["mango"]),
        *pool_rows("apple", demo_backends["apple"]),
        rule_row("mango", host="www.mango.com"),
        rule_row("apple", host="www.apple.com"),
    ]
    env = balancer_environment(tmp_path, rows, ADMIN_PASSWORD=PASSWORD, TRAFFIC_INTERVAL="1")
    manage(env, "ensure_admin")
    server = Balancer(env, workers=2, log_path=tmp_path / "balancer.log")
    yield server
    server.stop()


@pytest.fixture
def traffic(balancer):
    """Clients asking mango and apple, a few requests a second, until the test ends."""
    done = threading.Event()

    def ask():
        session = requests.Session()
        targets = [("www.mango.com", "/"), ("www.apple.com", "/"), ("www.mango.com", "/x")]
        while not done.is_set():
            for host, path in targets:
                session.get(balancer.url + path, headers={"Host": host}, timeout=5)
            session.get(balancer.url + "/missing", headers={"Host": "www.apple.com"}, timeout=5)
            done.wait(0.05)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join(10)


def test_the_traffic_page_draws_live_charts_of_real_traffic(page, balancer, traffic):
    log_in(page, balancer)
    page.click("#routing-tools a:text('Traffic')")  # linked from the admin index
    expect(page).to_have_title(re.compile(r"^Traffic \|"))
    for pool in ("mango", "apple"):
        section = page.locator(f"#pool-{pool}")
        expect(section.locator(".chart-rps canvas")).to_have_count(1, timeout=BOUND * 1000)
        expect(section.locator(".chart-latency canvas")).to_have_count(1)
        expect(section.locator(".chart-up canvas")).to_have_count(1)
    rate = page.locator("#pool-mango .traffic-summary tr:nth-child(2) td").first
    expect(rate).not_to_have_text("0", timeout=BOUND * 1000)
    expect(rate).to_have_text(A_RATE)
    drawn = page.locator("#traffic").get_attribute("data-drawn")
    deadline = time.monotonic() + BOUND
    while page.locator("#traffic").get_attribute("data-drawn") == drawn:  # redrawn by itself
        assert time.monotonic() < deadline, "the charts were never redrawn"
        time.sleep(0.2)
    expect(page.locator("#pool-mango .traffic-summary")).to_contain_text("up")
    expect(page.locator("#pool-mango h2 a")).to_have_text("mango")  # pool and rules are links
    expect(page.locator("#pool-mango .rules a").first).to_have_text(re.compile("mango"))
    page.wait_for_timeout(6000)  # a few more points for the screenshot
    page.screenshot(path=SCREENSHOTS / "traffic.png", full_page=True)

    page.select_option("#window", label="last 1 h")
    expect(page.locator("#pool-mango .chart-rps canvas")).to_have_count(1, timeout=BOUND * 1000)
    assert requests.get(balancer.url + "/", headers={"Host": "www.mango.com"}, timeout=5).ok


def test_the_rule_form_previews_which_recent_requests_an_edit_moves(page, balancer, traffic):
    log_in(page, balancer)
    page.goto(balancer.admin_url + "/admin/routing/hostrule/")
    page.click("a:text('www.mango.com')")
    page.select_option("#id_pool", label="apple")
    deadline = time.monotonic() + BOUND
    while True:  # until the workers have written the recent requests
        page.click("#preview-impact")
        lines = page.locator("#impact-lines")
        if lines.count():
            break
        assert time.monotonic() < deadline, "no recent request was ever previewed"
        page.wait_for_timeout(500)
    expect(lines).to_contain_text(
        re.compile(
            r"GET www\.mango\.com/ \(\d+ in the last hour\): "
            r"host rule www\.mango\.com → pool mango ⇒ pool apple"
        )
    )
    expect(lines).not_to_contain_text("www.apple.com")
    expect(page.locator("#id_pool option:checked")).to_have_text("apple")  # the form kept
    page.screenshot(path=SCREENSHOTS / "impact-preview.png", full_page=True)
    mango = requests.get(balancer.url + "/", headers={"Host": "www.mango.com"}, timeout=5)
    assert mango.text == "This is the mango application."  # nothing was saved
