"""The request's one way through: parsed once, limits before balancing, a plain transport."""

import io
import socket
import threading

import pytest

from routing import errors, transport
from routing.inbound import ClientRequest
from routing.models import Pool

from .conftest import listening_socket, read_request_head, url_of

pytestmark = pytest.mark.django_db


def named_backend(name):
    def app(environ, start_response):
        body = name.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app


class TestLimitsComeBeforeBalancing:
    def test_a_body_over_the_limit_is_refused_without_taking_a_backends_turn(
        self, client, make_route, wsgi_backend, settings
    ):
        settings.MAX_BODY_SIZE = 1000
        pool = make_route(
            [wsgi_backend(named_backend("a")), wsgi_backend(named_backend("b"))], host="localhost"
        )
        Pool.objects.filter(pk=pool.pk).update(algorithm="round_robin")
        first = client.get("/").content
        refused = client.post("/", data=b"x" * 1001, content_type="application/octet-stream")
        second, third = client.get("/").content, client.get("/").content
        assert refused.status_code == 413
        assert refused.content == b"Payload Too Large"
        # Round robin goes on as if the refused request had never come.
        assert first != second and third == first

    def test_a_malformed_content_length_is_a_bad_request(self, client, make_route, wsgi_backend):
        make_route([wsgi_backend(named_backend("a"))], host="localhost")
        result = client.post("/", data=b"x", content_type="text/plain", CONTENT_LENGTH="1x")
        assert (result.status_code, result.content) == (400, b"Bad Request")

    def test_an_unsupported_transfer_coding_is_refused_before_any_backend(
        self, client, make_route, closed_port_url
    ):
        make_route([closed_port_url], host="localhost")  # a backend tried would make it a 502
        result = client.post(
            "/", data=b"x", content_type="text/plain", HTTP_TRANSFER_ENCODING="gzip"
        )
        assert (result.status_code, result.content) == (501, b"Not Implemented")


def environ(**extra):
    base = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/a/b?x=1",
        "HTTP_HOST": "www.Mango.com:8000",
        "REMOTE_ADDR": "10.0.0.9",
        "wsgi.url_scheme": "http",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(),
    }
    return base | extra


class TestTheClientRequestIsReadOnce:
    def test_target_host_and_client_are_read_from_the_environ(self):
        request = ClientRequest.from_environ(environ())
        assert (request.path, request.query, request.host) == ("/a/b", "x=1", "www.mango.com")
        assert (request.client, request.peer_trusted) == ("10.0.0.9", False)

    @pytest.mark.parametrize(
        ("length", "coding", "has_body"),
        [("", None, False), ("0", None, False), ("5", None, True), ("", "chunked", True)],
    )
    def test_whether_there_is_a_body_is_decided_once(self, length, coding, has_body):
        extra = {"CONTENT_LENGTH": length} | ({"HTTP_TRANSFER_ENCODING": coding} if coding else {})
        request = ClientRequest.from_environ(environ(**extra))
        assert request.has_body is has_body
        assert (request.body() is not None) is has_body

    def test_the_client_behind_a_trusted_proxy_is_its_forwarded_address(self, settings):
        settings.TRUSTED_PROXIES = [__import__("ipaddress").ip_network("10.0.0.0/8")]
        request = ClientRequest.from_environ(environ(HTTP_X_FORWARDED_FOR="203.0.113.7, 10.1.1.1"))
        assert (request.client, request.peer_trusted) == ("203.0.113.7", True)

    def test_a_target_not_in_origin_form_fails_its_check(self):
        with pytest.raises(errors.BadTarget):
            ClientRequest.from_environ(environ(RAW_URI="http://x/")).check()


def one_answer_backend(answer):
    """A backend that reads one request head, answers with the given bytes; returns (url, seen)."""
    sock = listening_socket()
    seen = []

    def serve():
        conn, _ = sock.accept()
        with conn:
            seen.append(read_request_head(conn))
            conn.sendall(answer)
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return url_of(sock), seen


class TestTheTransportTakesPlainValues:
    def test_a_request_goes_out_byte_for_byte_and_its_answer_comes_back(self):
        url, seen = one_answer_backend(
            b"HTTP/1.1 201 Made\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
        request = transport.UpstreamRequest(
            "GET", url, "/%7e/a|b?q=%", {"X-One": "1", "Host": "named.example"}
        )
        response = transport.send(request)
        assert (response.status, response.reason) == (201, "Made")
        assert response.headers[:2] == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
        assert b"".join(response) == b"ok"
        response.close()
        head = seen[0]
        assert head.startswith(b"GET /%7e/a|b?q=% HTTP/1.1\r\n")
        assert b"X-One: 1\r\n" in head and b"Host: named.example\r\n" in head

    def test_a_refused_connection_is_not_sent(self, closed_port_url):
        with pytest.raises(errors.NotSent) as failure:
            transport.send(transport.UpstreamRequest("POST", closed_port_url, "/", {}))
        assert failure.value.status == 502 and not failure.value.timed_out

    def test_a_backend_that_never_answers_times_out(self, silent_backend_url):
        request = transport.UpstreamRequest("GET", silent_backend_url, "/", {}, read_timeout=0.3)
        with pytest.raises(errors.UpstreamTimedOut) as failure:
            transport.send(request)
        assert failure.value.status == 504 and not isinstance(failure.value, errors.NotSent)

    def test_a_connection_broken_after_sending_is_not_retryable_as_not_sent(self):
        sock = listening_socket()

        def reset_after_reading():
            conn, _ = sock.accept()
            read_request_head(conn)
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()

        threading.Thread(target=reset_after_reading, daemon=True).start()
        with pytest.raises(errors.UpstreamError) as failure:
            transport.send(transport.UpstreamRequest("GET", url_of(sock), "/", {}))
        assert not isinstance(failure.value, errors.NotSent)
        sock.close()


def test_every_attempt_failing_gives_503_if_none_was_sent_else_504_only_when_each_timed_out():
    timed_out = errors.UpstreamTimedOut("slow")
    refused = errors.NotSent("refused")
    connect_timed_out = errors.ConnectTimedOut("no connection")
    reset = errors.UpstreamError("reset")
    assert errors.UpstreamFailed([refused, refused]).status == 503
    assert errors.UpstreamFailed([refused, connect_timed_out]).status == 503
    assert errors.UpstreamFailed([connect_timed_out]).status == 503
    assert errors.UpstreamFailed([timed_out, timed_out]).status == 504
    assert errors.UpstreamFailed([connect_timed_out, timed_out]).status == 504
    assert errors.UpstreamFailed([refused, timed_out]).status == 502
    assert errors.UpstreamFailed([refused, reset]).status == 502
