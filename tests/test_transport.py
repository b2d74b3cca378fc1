"""The transport's own header parser, on header blocks as bytes (no server needed)."""

import http.client
import io

import pytest

from routing.proxy import MalformedResponseHeader, read_response_headers


def parse(block):
    return read_response_headers(io.BytesIO(block))


def test_headers_keep_their_order_repeats_and_spelling():
    message = parse(
        b"Set-Cookie: a=1\r\nX-Custom:  padded value \t\r\nset-cookie: b=2\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    assert message.items() == [
        ("Set-Cookie", "a=1"),
        ("X-Custom", "padded value"),
        ("set-cookie", "b=2"),
        ("Content-Length", "2"),
    ]
    assert message.get("content-length") == "2"
    assert message.get_all("Set-Cookie") == ["a=1", "b=2"]


def test_the_body_is_left_unread():
    stream = io.BytesIO(b"Content-Length: 2\r\n\r\nok")
    read_response_headers(stream)
    assert stream.read() == b"ok"


@pytest.mark.parametrize("block", [b"X-A: 1\n\nbody", b"X-A: 1\r\n"])
def test_a_bare_newline_or_the_end_of_the_stream_ends_the_block(block):
    assert parse(block).items() == [("X-A", "1")]


def test_whitespace_before_the_colon_is_removed():
    assert parse(b"X-Spaced \t: a\r\n\r\n").items() == [("X-Spaced", "a")]


@pytest.mark.parametrize(
    "line",
    [b"X-Not-A-Header", b"Bad Name: a", b": no name", b" : a", b"\tfolded"],
)
def test_a_line_that_is_no_header_is_refused(line):
    with pytest.raises(MalformedResponseHeader):
        parse(b"X-A: 1\r\n" + line + b"\r\nContent-Length: 2\r\n\r\n")


def test_obsolete_line_folding_is_refused():
    with pytest.raises(MalformedResponseHeader):
        parse(b"X-Folded: a\r\n b\r\n\r\n")


def test_limits_are_http_clients():
    with pytest.raises(http.client.HTTPException):
        parse(b"X-A: 1\r\n" * 101 + b"\r\n")
    with pytest.raises(http.client.LineTooLong):
        parse(b"X-A: " + b"a" * 70000 + b"\r\n\r\n")
