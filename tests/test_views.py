"""The catch-all view through Django's test client, against real backends on loopback."""

import hashlib
import ipaddress
import json

import pytest
from django.test import Client

from routing.models import Backend, HostRule, Pool

from .conftest import reset

pytestmark = pytest.mark.django_db


def echo(result):
    """Return what the echo backend saw, as it reported it."""
    assert result.status_code == 200, result.content
    return json.loads(result.content)


def header(seen, name):
    """Return the values of a header as the backend saw it."""
    return [value for key, value in seen["headers"] if key.lower() == name.lower()]


@pytest.mark.usefixtures("fruit_routes")
class TestRoutingToDemoBackends:
    def test_path_and_query_reach_the_backend_minus_the_prefix(self, client):
        seen = echo(client.get("/mango/echo/a%2Fb/caf%C3%A9?x=1&x=2&y=&z=%20"))
        assert seen["app"] == "mango"
        assert seen["path"] == "/echo/a%2Fb/caf%C3%A9"
        assert seen["query"] == "x=1&x=2&y=&z=%20"

    def test_host_rule_forwards_the_whole_path(self, client):
        seen = echo(client.get("/echo/deep/path", headers={"Host": "www.apple.com"}))
        assert (seen["app"], seen["path"]) == ("apple", "/echo/deep/path")

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
    def test_every_method_is_forwarded_with_its_body(self, client, method):
        body = bytes(range(256)) * 1000
        result = getattr(client, method)(
            "/apple/echo", data=body, content_type="application/octet-stream"
        )
        seen = echo(result)
        assert seen["method"] == method.upper()
        assert seen["body_length"] == len(body)
        assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()

    def test_head_is_forwarded_and_has_no_body(self, client):
        result = client.head("/mango/echo")
        assert result.status_code == 200
        assert result.content == b""

    def test_backend_sees_its_own_host_and_forwarding_headers(self, client, demo_backends):
        seen = echo(
            client.get(
                "/mango/echo",
                headers={"Host": "shop.example:8000", "X-Forwarded-For": "6.6.6.6"},
            )
        )
        mango_hosts = [url.removeprefix("http://") for url in demo_backends["mango"]]
        assert header(seen, "Host")[0] in mango_hosts
        assert header(seen, "X-Forwarded-For") == ["127.0.0.1"]
        assert header(seen, "X-Forwarded-Host") == ["shop.example:8000"]
        assert header(seen, "X-Forwarded-Proto") == ["http"]
        assert header(seen, "X-Forwarded-Prefix") == ["/mango"]
        assert header(seen, "Via") == ["1.1 django-lb"]

    def test_hop_by_hop_headers_are_not_forwarded(self, client):
        seen = echo(
            client.get(
                "/mango/echo",
                headers={
                    "Connection": "keep-alive, X-Secret",
                    "X-Secret": "for this hop only",
                    "Keep-Alive": "timeout=5",
                    "Proxy-Authorization": "Basic c2VjcmV0",
                    "TE": "trailers",
                    "Upgrade": "websocket",
                    "X-Kept": "yes",
                },
            )
        )
        names = {name.lower() for name, _value in seen["headers"]}
        assert not names & {
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-authorization",
            "te",
            "upgrade",
        }
        assert header(seen, "X-Kept") == ["yes"]

    def test_admin_cookies_are_not_forwarded(self, client):
        cookie = "theme=dark; lb_sessionid=abc; lb_csrftoken=def; cart=3"
        seen = echo(client.get("/mango/echo", headers={"Cookie": cookie}))
        assert header(seen, "Cookie") == ["theme=dark; cart=3"]
        seen = echo(client.get("/mango/echo", headers={"Cookie": "lb_sessionid=abc"}))
        assert header(seen, "Cookie") == []

    def test_no_accept_encoding_or_user_agent_is_invented(self, client):
        seen = echo(client.get("/mango/echo"))
        names = {name.lower() for name, _value in seen["headers"]}
        assert "accept-encoding" not in names
        assert "user-agent" not in names

    def test_proxied_response_carries_no_django_headers(self, client):
        result = client.get("/mango/")
        assert result["Content-Type"] == "text/plain; charset=utf-8"
        assert "X-Frame-Options" not in result
        assert "X-Content-Type-Options" not in result
        assert "Vary" not in result
        assert not result.cookies

    def test_warm_request_makes_no_query(self, client, django_assert_num_queries):
        client.get("/mango")
        with django_assert_num_queries(0):
            result = client.get("/mango")
        assert b"This is the mango application." in result.content

    def test_edit_takes_effect_on_the_next_request(self, client):
        assert client.get("/", headers={"Host": "www.kiwi.com"}).status_code == 404
        HostRule.objects.create(host="www.kiwi.com", pool=Pool.objects.get(name="apple"))
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        assert b"This is the apple application." in result.content
        HostRule.objects.filter(host="www.kiwi.com").update(enabled=False)
        assert client.get("/", headers={"Host": "www.kiwi.com"}).status_code == 404

    @pytest.mark.parametrize("host", ["www.mango.com", "localhost", "127.0.0.1:8000"])
    def test_traffic_listener_serves_none_of_the_balancers_pages(self, client, host):
        HostRule.objects.create(host="localhost", pool=Pool.objects.get(name="mango"))
        HostRule.objects.create(host="127.0.0.1", pool=Pool.objects.get(name="mango"))
        for path in ("/admin/", "/static/admin/css/base.css", "/healthz", "/metrics"):
            result = client.get(path, headers={"Host": host})
            assert result.content == b"This is the mango application."

    def test_admin_listener_serves_the_balancers_pages(self, admin_site):
        result = admin_site.get("/admin/")
        assert result.status_code == 302
        assert result["Location"].startswith("/admin/login/")
        assert admin_site.get("/healthz").content == b"OK"
        assert admin_site.get("/static/admin/css/base.css").status_code == 200
        assert admin_site.get("/metrics").status_code == 200

    def test_admin_listener_proxies_nothing(self, admin_site):
        assert admin_site.get("/mango").status_code == 404
        assert admin_site.get("/", headers={"Host": "www.mango.com"}).status_code == 400

    def test_admin_hosts_route_every_other_path(self, client):
        result = client.get("/apple/anything", headers={"Host": "127.0.0.1:8000"})
        assert result.content == b"This is the apple application."


class TestErrors:
    def assert_error(self, result, status, body):
        assert result.status_code == status
        assert result.content == body
        assert result["Content-Type"] == "text/plain; charset=utf-8"
        assert result["Content-Length"] == str(len(body))

    def test_unknown_host_returns_404(self, client, fruit_routes):
        result = client.get("/", headers={"Host": "www.notmango.com"})
        self.assert_error(result, 404, b"Not Found")

    def test_missing_host_returns_400(self, fruit_routes):
        self.assert_error(Client().get("/mango"), 400, b"Bad Request")

    @pytest.mark.parametrize("host", ["bad host", "www.mango.com:http", "a/b", "[::1"])
    def test_malformed_host_returns_400(self, client, fruit_routes, host):
        self.assert_error(client.get("/", headers={"Host": host}), 400, b"Bad Request")

    def test_pool_without_enabled_backend_returns_503(self, client, make_route):
        pool = make_route(["http://127.0.0.1:1"], host="www.kiwi.com")
        Backend.objects.filter(pool=pool).update(enabled=False)
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        self.assert_error(result, 503, b"No backend servers available.")

    def test_pool_with_only_drained_backends_returns_503(self, client, make_route):
        pool = make_route(["http://127.0.0.1:1"], host="www.kiwi.com")
        Backend.objects.filter(pool=pool).update(weight=0)
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        self.assert_error(result, 503, b"No backend servers available.")

    def test_empty_pool_never_falls_through_to_a_less_specific_rule(
        self, client, make_route, demo_backends
    ):
        make_route(demo_backends["apple"], prefix="/")
        make_route([], host="www.kiwi.com")
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        self.assert_error(result, 503, b"No backend servers available.")
        other = client.get("/", headers={"Host": "www.other.com"})
        assert other.content == b"This is the apple application."

    def test_refused_connection_returns_503(self, client, make_route, closed_port_url):
        make_route([closed_port_url], host="www.kiwi.com")
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        self.assert_error(result, 503, b"No backend servers available.")

    def test_reset_after_the_request_was_sent_returns_502(
        self, client, make_route, raw_backend, closed_port_url
    ):
        resetting = raw_backend(lambda conn, _read: reset(conn))
        make_route([closed_port_url, resetting], host="www.kiwi.com")
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        self.assert_error(result, 502, b"Bad Gateway")

    def test_slow_backend_returns_504(self, client, make_route, silent_backend_url):
        pool = make_route([silent_backend_url], host="www.kiwi.com")
        Pool.objects.filter(pk=pool.pk).update(read_timeout=0.5)
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        self.assert_error(result, 504, b"Gateway Timeout")

    def test_absolute_form_target_is_refused(self, client, fruit_routes):
        result = client.get("/", headers={"Host": "www.mango.com"}, RAW_URI="http://x/")
        self.assert_error(result, 400, b"Bad Request")


class TestBackendResponses:
    def test_bodiless_204_gets_no_content_type(self, client, make_route, wsgi_backend):
        def no_content(environ, start_response):
            start_response("204 No Content", [("X-Backend", "yes")])
            return [b""]

        make_route([wsgi_backend(no_content)], host="www.kiwi.com")
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        assert result.status_code == 204
        assert result.content == b""
        assert "Content-Type" not in result
        assert "X-Frame-Options" not in result
        assert result["X-Backend"] == "yes"

    def test_backend_status_reason_and_headers_pass_through(self, client, make_route, wsgi_backend):
        def teapot(environ, start_response):
            start_response(
                "418 I'm a teapot",
                [
                    ("Content-Type", "text/x-tea"),
                    ("Set-Cookie", "a=1; Path=/"),
                    ("Set-Cookie", "b=2; Path=/"),
                ],
            )
            return [b"short and stout"]

        make_route([wsgi_backend(teapot)], host="www.kiwi.com")
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        assert (result.status_code, result.reason_phrase) == (418, "I'm a teapot")
        assert result.content == b"short and stout"
        assert result["Content-Type"] == "text/x-tea"
        sent = [(name.lower(), value) for name, value in result.items()]
        assert ("set-cookie", "a=1; Path=/") in sent
        assert ("set-cookie", "b=2; Path=/") in sent

    def test_hop_by_hop_response_headers_are_removed(self, client, make_route, raw_backend):
        url = raw_backend(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Length: 2\r\n"
            b"Connection: close, X-Internal\r\n"
            b"X-Internal: secret\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Authenticate: Basic\r\n"
            b"Upgrade: h2c\r\n"
            b"X-Public: yes\r\n"
            b"\r\n"
            b"ok"
        )
        make_route([url], host="www.kiwi.com")
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        assert result.content == b"ok"
        names = [name.lower() for name, _value in result.items()]
        assert names == ["content-length", "x-public", "via"]

    @pytest.mark.parametrize(("prefix", "path"), [(None, "/echo"), ("/kiwi", "/kiwi/echo")])
    def test_preserve_host_sends_the_clients_host(
        self, client, make_route, demo_backends, prefix, path
    ):
        make_route(demo_backends["mango"], host="www.kiwi.com", prefix=prefix, preserve_host=True)
        seen = echo(client.get(path, headers={"Host": "www.kiwi.com"}))
        assert header(seen, "Host") == ["www.kiwi.com"]


class TestClientAndBackendCannotCauseA500:
    def test_skip_header_marker_from_a_client_is_dropped(self, client, fruit_routes):
        seen = echo(client.get("/mango/echo", headers={"X-Sneaky": "@@@SKIP_HEADER@@@"}))
        assert header(seen, "X-Sneaky") == []

    def test_unparsable_location_passes_unchanged(self, client, make_route, raw_backend):
        url = raw_backend(
            b"HTTP/1.1 302 Found\r\nLocation: http://[oops/\r\nContent-Length: 0\r\n\r\n"
        )
        make_route([url], host="www.kiwi.com")
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        assert (result.status_code, result["Location"]) == (302, "http://[oops/")

    def test_vanished_ca_bundle_gives_502(self, client, make_route, tmp_path):
        bundle = tmp_path / "ca.pem"
        bundle.write_text("")
        pool = make_route(["https://127.0.0.1:1"], host="www.kiwi.com")
        Pool.objects.filter(pk=pool.pk).update(tls_ca_bundle=str(bundle))
        bundle.unlink()
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        assert (result.status_code, result.content) == (502, b"Bad Gateway")

    def test_backend_cannot_set_the_admins_cookies(self, client, make_route, wsgi_backend):
        def planter(environ, start_response):
            start_response(
                "200 OK",
                [
                    ("Set-Cookie", "lb_sessionid=attacker; Path=/admin"),
                    ("Set-Cookie", "lb_csrftoken=attacker"),
                    ("Set-Cookie", "theirs=1"),
                ],
            )
            return [b"ok"]

        make_route([wsgi_backend(planter)], host="www.kiwi.com")
        result = client.get("/", headers={"Host": "www.kiwi.com"})
        cookies = [value for name, value in result.items() if name.lower() == "set-cookie"]
        assert cookies == ["theirs=1"]


@pytest.mark.usefixtures("fruit_routes")
class TestClientAddress:
    def test_untrusted_client_cannot_forge_its_address(self, client):
        seen = echo(
            client.get(
                "/mango/echo",
                headers={
                    "X-Forwarded-For": "6.6.6.6",
                    "X-Real-IP": "6.6.6.6",
                    "Forwarded": "for=6.6.6.6",
                },
            )
        )
        assert header(seen, "X-Forwarded-For") == ["127.0.0.1"]
        assert header(seen, "X-Real-IP") == header(seen, "Forwarded") == []

    def test_trusted_proxy_address_chain_is_kept_and_appended(self, client, settings):
        settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.0/8")]
        seen = echo(
            client.get(
                "/mango/echo",
                headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.2", "X-Real-IP": "203.0.113.9"},
            )
        )
        assert header(seen, "X-Forwarded-For") == ["203.0.113.9, 10.0.0.2, 127.0.0.1"]
        assert header(seen, "X-Real-IP") == ["203.0.113.9"]

    def test_admin_host_paths_are_read_as_the_resolver_reads_them(self, client):
        routed = client.get("/admin/../apple/x")
        assert routed.content == b"This is the apple application."
        kept = client.get("/mango/../admin/")
        assert kept.status_code in (302, 404)
        assert b"application" not in kept.content
