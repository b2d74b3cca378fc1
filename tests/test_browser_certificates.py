"""The certificates list in a real browser (Debian's Chromium, Playwright) against gunicorn.

Its screenshot, certificates.png, is the README's; `make screenshots` refreshes it.
"""

import datetime

import pytest
from cryptography import x509
from playwright.sync_api import expect

from routing.pem import read_certificate

from .acme_ca import make_certificate
from .conftest import pool_rows, rule_row
from .test_browser import SCREENSHOTS, log_in, page, start_balancer  # noqa: F401  (fixture)


def certificate_row(host, days=None, error="", failures=0):
    """A fixture row for a host's certificate: issued for `days` more, or only a failure."""
    now = datetime.datetime.now(datetime.UTC)
    fields = {"host": host, "last_error": error, "failures": failures, "updated": now.isoformat()}
    if days is not None:
        chain, key = make_certificate([host], days=days, start_days_ago=90 - days)
        details = read_certificate(chain, key)
        issuer = x509.Name.from_rfc4514_string("CN=Pebble Intermediate CA 6f4a1e")
        fields.update(
            chain_pem=chain,
            private_key_pem=key,
            names=details.names,
            not_before=details.not_before.isoformat(),
            not_after=details.not_after.isoformat(),
            issuer=issuer.rfc4514_string(),
        )
    if failures:
        fields["next_attempt"] = (now + datetime.timedelta(minutes=20)).isoformat()
    return {"model": "routing.certificate", "fields": fields}


@pytest.fixture
def balancer(tmp_path):
    hosts = ["www.mango.com", "www.apple.com", "shop.mango.com", "www.kiwi.com"]
    rows = [
        *pool_rows("mango", ["http://127.0.0.1:9"]),
        *(rule_row("mango", host=host, tls="auto", force_https=True) for host in hosts),
        certificate_row("www.mango.com", days=74),
        certificate_row("www.apple.com", days=12),
        certificate_row(
            "shop.mango.com",
            days=20,
            error="urn:ietf:params:acme:error:rateLimited: too many certificates already issued",
            failures=1,
        ),
        certificate_row(
            "www.kiwi.com",
            error="challenge failed: urn:ietf:params:acme:error:connection: "
            "www.kiwi.com: connection refused",
            failures=3,
        ),
    ]
    server = start_balancer(tmp_path, rows)
    server.keys = [row["fields"].get("private_key_pem", "") for row in rows if "host" in row]
    yield server
    server.stop()


def test_the_certificate_list_shows_expiry_badges_and_errors(page, balancer):  # noqa: F811
    log_in(page, balancer)
    admin = balancer.admin_url
    page.goto(admin + "/admin/routing/certificate/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.filter(has_text="www.mango.com")).to_contain_text("valid, 73 days left")
    expect(rows.filter(has_text="www.apple.com")).to_contain_text("expires in 11 days")
    expect(rows.filter(has_text="shop.mango.com")).to_contain_text("failing, expires in")
    expect(rows.filter(has_text="www.kiwi.com")).to_contain_text("connection refused")
    page.click("#toggle-nav-sidebar")  # the list's columns get the page's width
    page.screenshot(path=SCREENSHOTS / "certificates.png", full_page=True)

    # An uploaded certificate: checked, listed, its key never shown again.
    chain, key = make_certificate(["static.mango.com"], days=300)
    page.goto(admin + "/admin/routing/certificate/add/")
    page.fill("#id_host", "static.mango.com")
    page.fill("#id_chain_pem", chain)
    page.fill("#id_private_key_pem", key)
    page.click("input[name=_save]")
    expect(page.locator("#result_list")).to_contain_text("static.mango.com")
    expect(
        page.locator("#result_list tbody tr").filter(has_text="static.mango.com")
    ).to_contain_text("uploaded")
    page.locator("#result_list a", has_text="static.mango.com").click()
    expect(page.locator("#id_private_key_pem")).to_have_value("")
    content = page.content()
    for secret in (key, *balancer.keys):
        if secret:
            assert secret.splitlines()[1] not in content
