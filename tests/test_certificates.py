"""Certificates, ACME challenges and force_https without a CA: models, the view, the admin, SNI."""

import datetime
import ssl
import subprocess
from io import StringIO

import pytest
import yaml
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone
from django.views.debug import SafeExceptionReporterFilter

from routing import acme, tls
from routing.certificate_admin import expiry_badge
from routing.explain import explain
from routing.models import AcmeChallenge, Certificate, HostRule, PathRule, RoutingVersion
from routing.pem import read_certificate
from routing.table import get_route_table

from .acme_ca import make_certificate
from .conftest import PROJECT_ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_certificates_in_memory():
    """Start and end each test with no certificates read into this process."""
    tls.forget_certificates()
    yield
    tls.forget_certificates()


@pytest.fixture
def mango(make_route, demo_backends):
    return make_route(demo_backends["mango"], host="www.mango.com")


# The host rule's fields ---------------------------------------------------------------------


def test_tls_auto_on_a_wildcard_host_is_refused(mango):
    with pytest.raises(ValidationError) as refused:
        HostRule.objects.create(host="*.mango.com", pool=mango, tls="auto")
    assert refused.value.error_dict["tls"][0].code == "tls_auto_wildcard"
    with pytest.raises(ValidationError):
        HostRule.objects.filter(host="www.mango.com").update(host="*.mango.org", tls="auto")
    assert not HostRule.objects.filter(host__startswith="*.").exists()


def test_tls_auto_on_an_exact_host_and_off_on_a_wildcard_are_fine(mango):
    HostRule.objects.create(host="shop.mango.com", pool=mango, tls="auto", force_https=True)
    HostRule.objects.create(host="*.mango.org", pool=mango, tls="off")


def test_a_wildcard_with_tls_auto_is_refused_in_the_admin(admin_client, mango):
    result = admin_client.post(
        "/admin/routing/hostrule/add/",
        {"host": "*.kiwi.com", "pool": mango.pk, "enabled": "on", "tls": "auto"},
    )
    assert result.status_code == 200
    assert "Automatic TLS cannot cover a wildcard host" in result.content.decode()


# ACME challenges and force_https on the traffic listener ------------------------------------


def test_a_pending_challenge_is_answered_before_any_rule_and_never_redirected(client, mango):
    HostRule.objects.filter(host="www.mango.com").update(force_https=True)
    AcmeChallenge.objects.create(token="tok-EN_1", key_authorization="tok-EN_1.thumb", host="x")
    for host in ("www.mango.com", "unknown.example"):
        result = client.get("/.well-known/acme-challenge/tok-EN_1", headers={"Host": host})
        assert (result.status_code, result.content) == (200, b"tok-EN_1.thumb")
        assert result["Content-Type"].startswith("text/plain")


def test_an_unknown_token_goes_to_the_rules(client, mango):
    result = client.get("/.well-known/acme-challenge/nope", headers={"Host": "www.mango.com"})
    assert result.content == b"This is the mango application."
    assert (
        client.get("/.well-known/acme-challenge/nope", headers={"Host": "x.y"}).status_code == 404
    )


@pytest.mark.parametrize(
    ("https_port", "location"),
    [
        (443, "https://www.mango.com/a/%7e?x=1&x=2"),
        (8443, "https://www.mango.com:8443/a/%7e?x=1&x=2"),
    ],
)
def test_force_https_redirects_plain_http_with_308(client, mango, settings, https_port, location):
    settings.HTTPS_PORT = https_port
    HostRule.objects.filter(host="www.mango.com").update(force_https=True)
    result = client.get("/a/%7e?x=1&x=2", headers={"Host": "WWW.mango.com:8000"})
    assert result.status_code == 308
    assert result["Location"] == location


def test_force_https_is_the_hosts_and_covers_its_path_rules_too(client, mango):
    HostRule.objects.filter(host="www.mango.com").update(force_https=True)
    PathRule.objects.create(host="www.mango.com", prefix="/api", pool=mango)
    PathRule.objects.create(host="", prefix="/api", pool=mango)
    result = client.get("/api/x", headers={"Host": "www.mango.com"})
    assert (result.status_code, result["Location"]) == (308, "https://www.mango.com/api/x")
    assert client.get("/api/x", headers={"Host": "other.test"}).status_code == 200


def test_the_redirect_carries_the_rules_response_headers(client, mango):
    HostRule.objects.filter(host="www.mango.com").update(
        force_https=True,
        response_headers={"set": {"Strict-Transport-Security": "max-age=63072000"}},
    )
    result = client.get("/", headers={"Host": "www.mango.com"})
    assert result.status_code == 308
    assert result["Strict-Transport-Security"] == "max-age=63072000"


def test_force_https_lets_https_requests_through(client, mango):
    HostRule.objects.filter(host="www.mango.com").update(force_https=True)
    result = client.get("/", headers={"Host": "www.mango.com"}, secure=True)
    assert result.content == b"This is the mango application."


def test_warm_requests_and_https_redirects_make_no_query(client, mango, django_assert_num_queries):
    HostRule.objects.create(host="secure.mango.com", pool=mango, force_https=True)
    client.get("/", headers={"Host": "www.mango.com"})
    with django_assert_num_queries(0):
        assert client.get("/", headers={"Host": "www.mango.com"}).status_code == 200
        assert client.get("/", headers={"Host": "secure.mango.com"}).status_code == 308


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf", "soon"])
def test_the_loop_refuses_an_interval_that_is_no_positive_number_of_seconds(interval):
    with pytest.raises(CommandError, match="interval"):
        call_command("certificates", "--loop", "--interval", interval, stdout=StringIO())


def test_a_stale_challenge_token_is_deleted_by_the_next_round(mango):
    AcmeChallenge.objects.create(token="old", key_authorization="old.x", host="www.mango.com")
    AcmeChallenge.objects.create(token="new", key_authorization="new.x", host="www.mango.com")
    AcmeChallenge.objects.filter(token="old").update(
        created=timezone.now() - datetime.timedelta(days=2)
    )
    assert acme.issue_due_certificates() == []  # nothing due: no CA asked
    assert list(AcmeChallenge.objects.values_list("token", flat=True)) == ["new"]


# The routes file ----------------------------------------------------------------------------


def test_tls_and_force_https_go_through_the_routes_file_and_certificates_do_not(mango, tmp_path):
    HostRule.objects.filter(host="www.mango.com").update(tls="auto", force_https=True)
    chain, key = make_certificate(["www.mango.com"])
    acme.store_certificate("www.mango.com", chain, key, uploaded=True)
    exported = StringIO()
    call_command("export_routes", stdout=exported)
    table = yaml.safe_load(exported.getvalue())
    (host,) = table["hosts"]
    assert (host["tls"], host["force_https"]) == ("auto", True)
    assert "certificate" not in exported.getvalue().lower()
    host.update(tls="off", force_https=False)
    table["hosts"].append({"host": "*.kiwi.com", "pool": host["pool"], "tls": "auto"})
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump(table))
    with pytest.raises(CommandError):
        call_command("import_routes", str(routes), stdout=StringIO(), stderr=StringIO())
    table["hosts"].pop()
    routes.write_text(yaml.safe_dump(table))
    call_command("import_routes", str(routes), stdout=StringIO())
    rule = HostRule.objects.get(host="www.mango.com")
    assert (rule.tls, rule.force_https) == ("off", False)
    assert Certificate.objects.filter(host="www.mango.com").exists()


# Certificates are state: their own version, never the routing version -----------------------


def test_storing_a_certificate_moves_the_certificate_version_only(mango):
    version, health, certificates = RoutingVersion.all_versions()
    chain, key = make_certificate(["www.mango.com"])
    acme.store_certificate("www.mango.com", chain, key, uploaded=True)
    assert RoutingVersion.all_versions() == (version, health, certificates + 1)
    acme.record_failure("www.kiwi.com", "refused")
    Certificate.objects.filter(host="www.kiwi.com").delete()
    assert RoutingVersion.all_versions()[:2] == (version, health)


# Which hosts are due ------------------------------------------------------------------------


def store(host, days, **fields):
    chain, key = make_certificate([host], days=days)
    acme.store_certificate(host, chain, key, uploaded=False)
    Certificate.objects.filter(host=host).update(**fields)


def test_due_hosts_are_those_without_or_near_expiry_and_not_backing_off(mango, settings):
    settings.ACME_RENEW_DAYS = 30
    for host in ("new", "fresh", "near", "expired", "failed", "backing-off", "uploaded", "off"):
        HostRule.objects.create(host=f"{host}.test", pool=mango, tls="auto")
    HostRule.objects.filter(host="off.test").update(tls="off")
    HostRule.objects.create(host="disabled.test", pool=mango, tls="auto", enabled=False)
    store("fresh.test", 60)
    store("near.test", 29)
    store("expired.test", -1)
    store("uploaded.test", 5, uploaded=True)
    acme.record_failure("failed.test", "refused", now=timezone.now() - datetime.timedelta(days=1))
    acme.record_failure("backing-off.test", "refused")
    assert sorted(acme.due_hosts()) == ["expired.test", "failed.test", "near.test", "new.test"]


def test_each_failure_in_a_row_doubles_the_wait_up_to_a_day(mango):
    now = timezone.now()
    waits = []
    for _ in range(12):
        acme.record_failure("www.mango.com", "connection refused", now=now)
        waits.append(Certificate.objects.get(host="www.mango.com").next_attempt - now)
    assert waits[:3] == [datetime.timedelta(minutes=m) for m in (5, 10, 20)]
    assert waits[-1] == datetime.timedelta(days=1)
    chain, key = make_certificate(["www.mango.com"])
    acme.store_certificate("www.mango.com", chain, key, uploaded=False)
    stored = Certificate.objects.get(host="www.mango.com")
    assert (stored.failures, stored.last_error, stored.next_attempt) == (0, "", None)


def test_a_ca_that_cannot_be_reached_fails_every_due_host_and_says_why(mango, settings):
    settings.ACME_DIRECTORY_URL = "http://127.0.0.1:9/dir"  # the discard port: nothing listens
    HostRule.objects.filter(host="www.mango.com").update(tls="auto")
    (outcome,) = acme.issue_due_certificates()
    assert not outcome.issued and "ACME account" in outcome.error
    assert Certificate.objects.get(host="www.mango.com").failures == 1


def test_the_command_counts_one_due_host_in_the_singular(mango, settings):
    settings.ACME_DIRECTORY_URL = "http://127.0.0.1:9/dir"  # the discard port: nothing listens
    HostRule.objects.filter(host="www.mango.com").update(tls="auto")
    output = StringIO()
    call_command("certificates", stdout=output)
    assert output.getvalue().splitlines()[-1] == "1 certificate due, 1 failed."


# Reading an uploaded chain and key ----------------------------------------------------------


def test_a_chain_and_its_key_are_read():
    chain, key = make_certificate(["a.test", "b.test"], days=10)
    details = read_certificate(chain, key)
    assert details.names == ["a.test", "b.test"]
    assert details.not_after - details.not_before == datetime.timedelta(days=11)


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda chain, key, other: ("not a certificate", key), "chain_unreadable"),
        (lambda chain, key, other: (chain, "not a key"), "key_unreadable"),
        (lambda chain, key, other: (chain, other), "key_mismatch"),
    ],
)
def test_a_bad_chain_or_a_key_of_another_certificate_is_refused(mangle, code):
    chain, key = make_certificate(["a.test"])
    _other_chain, other_key = make_certificate(["a.test"])
    with pytest.raises(ValidationError) as refused:
        read_certificate(*mangle(chain, key, other_key))
    assert refused.value.code == code
    assert "PRIVATE KEY-----\nM" not in str(refused.value)


def upload(admin_client, host, chain, key):
    """Post the admin's Add certificate form."""
    return admin_client.post(
        "/admin/routing/certificate/add/",
        {"host": host, "chain_pem": chain, "private_key_pem": key},
    )


def openssl_certificate(tmp_path, key_args):
    """Return (chain PEM, key PEM) of a self-signed certificate for a.test made by openssl."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", *key_args, "-out", str(key)], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-key", str(key), "-subj", "/CN=a.test", "-days", "2"]
        + ["-addext", "subjectAltName=DNS:a.test", "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert.read_text(), key.read_text()


# A curve OpenSSL knows and the TLS library does not; an RSA key too small to serve.
UNSUPPORTED_CURVE = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp112r1"]
RSA_1024 = ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]


@pytest.mark.parametrize(
    ("key_args", "message"),
    [
        (UNSUPPORTED_CURVE, "algorithm is not supported"),
        (RSA_1024, "cannot serve this certificate"),
    ],
)
def test_a_certificate_the_listener_could_not_serve_is_refused_on_upload(
    admin_client, tmp_path, key_args, message
):
    chain, key = openssl_certificate(tmp_path, key_args)
    result = upload(admin_client, "a.test", chain, key)
    assert result.status_code == 200
    assert message in result.content.decode()
    assert not Certificate.objects.exists()


# The admin ----------------------------------------------------------------------------------


def test_an_uploaded_certificate_is_stored_and_its_key_never_shown(admin_client):
    chain, key = make_certificate(["www.mango.com", "mango.com"])
    result = upload(admin_client, "WWW.Mango.com", chain, key)
    assert result.status_code == 302, result.content.decode()
    stored = Certificate.objects.get(host="www.mango.com")
    assert stored.uploaded and stored.names == ["www.mango.com", "mango.com"]
    assert stored.private_key_pem.strip() == key.strip()
    key_body = key.splitlines()[1]
    for url in ("/admin/routing/certificate/", f"/admin/routing/certificate/{stored.pk}/change/"):
        page = admin_client.get(url).content.decode()
        assert key_body not in page
    assert "www.mango.com" in page


def test_an_upload_for_a_host_its_certificate_does_not_name_is_refused(admin_client):
    chain, key = make_certificate(["www.apple.com", "apple.com"])
    result = upload(admin_client, "www.mango.com", chain, key)
    assert result.status_code == 200
    assert "is for www.apple.com, apple.com, not for www.mango.com" in result.content.decode()
    assert not Certificate.objects.exists()


@pytest.mark.parametrize("host", ["shop.mango.com", "*.mango.com"])
def test_a_wildcard_certificate_may_be_uploaded_for_a_host_it_covers(admin_client, host):
    chain, key = make_certificate(["*.mango.com"])
    result = upload(admin_client, host, chain, key)
    assert result.status_code == 302, result.content.decode()
    assert Certificate.objects.get().names == ["*.mango.com"]


def test_a_user_who_may_only_view_certificates_never_sees_a_key(admin_site):
    chain, key = make_certificate(["www.mango.com"])
    acme.store_certificate("www.mango.com", chain, key, uploaded=True)
    viewer = User.objects.create_user("viewer", password="-", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_certificate"))
    admin_site.force_login(viewer)
    certificate = Certificate.objects.get()
    page = admin_site.get(f"/admin/routing/certificate/{certificate.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "www.mango.com" in text and chain.splitlines()[1] in text  # the chain is public
    for line in key.splitlines()[1:-1]:
        assert line not in text
    assert "PRIVATE KEY" not in text
    assert "stored, never shown" in text


def test_an_error_report_of_an_upload_never_holds_its_key(admin_client):
    chain, key = make_certificate(["www.mango.com"])
    result = upload(admin_client, "www.mango.com", chain, key)
    # What Django's error reports (the log's, ADMINS' mail) would show of the form.
    shown = SafeExceptionReporterFilter().get_post_parameters(result.wsgi_request)
    assert shown["private_key_pem"] != key and "PRIVATE KEY" not in shown["private_key_pem"]
    assert shown["chain_pem"] == chain


def test_an_upload_whose_key_does_not_match_is_refused(admin_client):
    chain, _key = make_certificate(["www.mango.com"])
    _chain, other_key = make_certificate(["www.mango.com"])
    result = upload(admin_client, "www.mango.com", chain, other_key)
    assert result.status_code == 200
    assert "does not match the certificate" in result.content.decode()
    assert not Certificate.objects.exists()


@pytest.mark.parametrize(
    ("days", "error", "colour", "label"),
    [
        (60, "", "#2e7d32", "valid"),
        (29, "", "#ef6c00", "expires in"),
        (-1, "", "#c62828", "expired"),
        (60, "rateLimited", "#c62828", "failing"),
    ],
)
def test_expiry_badges(days, error, colour, label):
    chain, key = make_certificate(["a.test"], days=days, start_days_ago=2)
    details = read_certificate(chain, key)
    certificate = Certificate(
        host="a.test", chain_pem=chain, private_key_pem=key, not_after=details.not_after
    )
    certificate.last_error = error
    badge = expiry_badge(certificate)
    assert colour in badge and label in badge


def test_the_certificate_list_shows_badges_and_last_errors(admin_client):
    chain, key = make_certificate(["www.mango.com"], days=10)
    acme.store_certificate("www.mango.com", chain, key, uploaded=False)
    acme.record_failure("www.kiwi.com", "urn:ietf:params:acme:error:connection: refused")
    page = admin_client.get("/admin/routing/certificate/").content.decode()
    assert "expires in" in page and "failing" in page
    assert "urn:ietf:params:acme:error:connection: refused" in page


def test_order_again_ends_a_back_off_so_the_next_round_retries(admin_client, mango):
    HostRule.objects.filter(host="www.mango.com").update(tls="auto")
    acme.record_failure("www.mango.com", "urn:ietf:params:acme:error:dns: NXDOMAIN")
    assert acme.due_hosts() == []  # backing off
    certificate = Certificate.objects.get()
    result = admin_client.post(
        "/admin/routing/certificate/",
        {"action": "order_again", "_selected_action": [certificate.pk]},
        follow=True,
    )
    assert "1 host is ordered again at the certificate loop&#x27;s next round" in (
        result.content.decode()
    )
    assert acme.due_hosts() == ["www.mango.com"]
    certificate.refresh_from_db()
    assert certificate.last_error and certificate.failures == 1  # the history of failures stays


def test_order_again_leaves_uploaded_certificates_alone(admin_client):
    chain, key = make_certificate(["www.mango.com"])
    acme.store_certificate("www.mango.com", chain, key, uploaded=True)
    certificate = Certificate.objects.get()
    result = admin_client.post(
        "/admin/routing/certificate/",
        {"action": "order_again", "_selected_action": [certificate.pk]},
        follow=True,
    )
    assert "uploaded certificates are never ordered" in result.content.decode()


# Choosing a certificate by SNI --------------------------------------------------------------


def test_the_store_finds_a_name_exactly_then_by_its_wildcard():
    chain, key = make_certificate(["www.mango.com"])
    wild_chain, wild_key = make_certificate(["*.kiwi.com"])
    acme.store_certificate("www.mango.com", chain, key, uploaded=True)
    acme.store_certificate("kiwi.com", wild_chain, wild_key, uploaded=True)
    acme.record_failure("www.apple.com", "refused")  # no certificate: not served
    store = tls.load_store()
    assert isinstance(store.context_for("WWW.MANGO.COM."), ssl.SSLContext)
    assert store.context_for("shop.kiwi.com") is not None
    assert store.context_for("a.shop.kiwi.com") is None
    assert store.context_for("www.apple.com") is None
    assert store.context_for("www.mango.com") is store.context_for("www.mango.com")
    assert store.version == RoutingVersion.all_versions()[2]


def test_a_hosts_own_certificate_wins_over_another_that_also_names_it():
    # An uploaded certificate for mango.com that names www.mango.com too, and
    # www.mango.com's own (sorted after it): each host gets its own.
    both_chain, both_key = make_certificate(["mango.com", "www.mango.com"])
    own_chain, own_key = make_certificate(["www.mango.com"])
    acme.store_certificate("mango.com", both_chain, both_key, uploaded=True)
    acme.store_certificate("www.mango.com", own_chain, own_key, uploaded=False)
    store = tls.load_store()
    assert store.context_for("www.mango.com") is not store.context_for("mango.com")
    assert store.by_name["www.mango.com"] == Certificate.objects.get(host="www.mango.com").pk


def test_the_refresher_reloads_the_certificates_only_when_their_version_moved(
    django_assert_num_queries,
):
    store = tls.load_store()
    with django_assert_num_queries(0):
        tls.reload_if_changed(store.version)
    assert tls._store is store
    chain, key = make_certificate(["www.mango.com"])
    acme.store_certificate("www.mango.com", chain, key, uploaded=True)
    tls.reload_if_changed(RoutingVersion.all_versions()[2])
    assert tls._store is not store and tls._store.context_for("www.mango.com") is not None


def test_the_explainer_says_a_plain_http_url_is_sent_to_https(mango, settings):
    settings.HTTPS_PORT = 8443
    HostRule.objects.filter(host="www.mango.com").update(force_https=True)
    plain = explain(get_route_table(), "http://www.mango.com/a?b=1")
    assert (plain.status, plain.location) == (308, "https://www.mango.com:8443/a?b=1")
    assert "force HTTPS" in plain.answer
    secure = explain(get_route_table(), "https://www.mango.com/a?b=1")
    assert secure.status == 200 and not secure.location


# The test CA ----------------------------------------------------------------------------------


def test_ci_installs_the_test_ca_before_the_tests():
    """.ci/run runs `make test`, which installs Debian's pebble (with its DNS) if missing."""
    assert "\nmake test\n" in (PROJECT_ROOT / ".ci" / "run").read_text()
    planned = subprocess.run(
        ["make", "--dry-run", "test"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    install = next(line for line in planned.splitlines() if "pebble" in line)
    assert "command -v pebble-challtestsrv" in install
    assert install.rstrip("; }").endswith("apt-get install -y -qq --no-install-recommends pebble")
    assert planned.index(install) < planned.index("pytest")
