"""The routing table's History page and rollback, in a real browser against gunicorn.

Screenshots go to SCREENSHOT_DIR, as in test_browser.py (`make screenshots`).
"""

import time

import pytest
import requests
from playwright.sync_api import expect

from . import test_browser
from .conftest import pool_rows, rule_row
from .test_browser import BOUND, SCREENSHOTS, log_in, start_balancer

page = test_browser.page  # the same Chromium page


@pytest.fixture
def balancer(tmp_path, demo_backends):
    """The balancer with mango on www.mango.com: revision 1, from loaddata."""
    rows = [*pool_rows("mango", demo_backends["mango"]), rule_row("mango", host="www.mango.com")]
    server = start_balancer(tmp_path, rows)
    yield server
    server.stop()


def later_status(balancer):
    return requests.get(balancer.url + "/later", headers={"Host": "x.test"}, timeout=5).status_code


def wait_for_status(balancer, status):
    deadline = time.monotonic() + BOUND
    while later_status(balancer) != status:
        assert time.monotonic() < deadline, f"/later never answered {status}"
        time.sleep(0.1)


def test_operator_reads_the_history_and_rolls_back_a_change(page, balancer):
    log_in(page, balancer)
    admin = balancer.admin_url
    page.goto(admin + "/admin/routing/pathrule/add/")
    page.fill("#id_prefix", "/later")
    page.select_option("#id_pool", label="mango")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    wait_for_status(balancer, 200)

    page.click("#routing-tools-nav a:text('History')")  # in the sidebar of every admin page
    history = page.locator("#history")
    expect(history.locator("tbody tr")).to_have_count(2)
    newest, first = history.locator("tbody tr").nth(0), history.locator("tbody tr").nth(1)
    expect(newest).to_contain_text("+ path /later")
    expect(newest.locator("td").nth(2)).to_have_text("admin")
    expect(first).to_contain_text("+ host www.mango.com")
    page.screenshot(path=SCREENSHOTS / "history.png", full_page=True)

    page.click("#revision-1 a.rollback")
    expect(page.locator("#rollback-changes")).to_have_text("- path /later")
    page.screenshot(path=SCREENSHOTS / "rollback.png", full_page=True)
    assert later_status(balancer) == 200  # the preview wrote nothing
    page.click("#confirm-rollback")
    expect(page.locator(".messagelist")).to_contain_text("Rolled back to revision 1")
    expect(page.locator("#revision-3")).to_contain_text("rollback to 1")
    expect(page.locator("#revision-3")).to_contain_text("- path /later")
    wait_for_status(balancer, 404)
