"""The transport's own response parser: header blocks as bytes, heads over socket pairs."""

import contextlib
import http.client
import io
import socket
import threading
import time

import pytest
import urllib3
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from routing.responses import UpstreamBody
from routing.transport import UpstreamResponse
from routing.transport.parser import (
    FinalResponse,
    MalformedResponseHeader,
    UnsupportedResponseCoding,
    read_response_headers,
)


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


READ_TIMEOUT = 0.5
CLOSE = None


@contextlib.contextmanager
def backend_sending(*pieces, interval=0.0):
    """Yield the near end of a socket pair whose far end sends the pieces.

    A piece is bytes to send, then pause `interval`, seconds to pause, or
    CLOSE to end the sending side (the end of a close-delimited body).
    """
    near, far = socket.socketpair()
    near.settimeout(READ_TIMEOUT)  # as urllib3 sets the read timeout before the head

    def send():
        with contextlib.suppress(OSError):
            for piece in pieces:
                if piece is CLOSE:
                    far.shutdown(socket.SHUT_WR)
                elif isinstance(piece, float):
                    time.sleep(piece)
                else:
                    far.sendall(piece)
                    time.sleep(interval)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield near
    finally:
        near.close()
        far.close()
        sender.join()


def begin_response(sock):
    response = FinalResponse(sock, method="GET")
    response.begin()
    return response


ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok"


@pytest.mark.parametrize(
    "pieces",
    [
        [bytes([byte]) for byte in ANSWER],  # a head of 46 bytes at 0.1 s each
        [b"HTTP/1.1 100 Continue\r\n\r\n"] * 40 + [ANSWER],  # endless interim answers
    ],
    ids=["trickled", "endless-1xx"],
)
def test_the_read_timeout_bounds_the_whole_head(pieces):
    with backend_sending(*pieces, interval=0.1) as sock:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            begin_response(sock)
        assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 0.5


def test_after_the_head_the_read_timeout_bounds_each_read():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    # The head's last read waits 0.3 s at most; each of the body's gets 0.5 s again.
    slow_head = [head[:10], 0.1, head[10:20], 0.1, head[20:]]
    slow_body = [0.4, b"x", 0.4, b"x", 0.4, b"x", 0.4, b"x"]
    with backend_sending(*slow_head, *slow_body) as sock:
        response = begin_response(sock)
        assert sock.gettimeout() == READ_TIMEOUT
        assert response.read() == b"xxxx"  # 1.6 s, never 0.5 s without a byte


def test_a_head_within_the_read_timeout_is_read_in_full():
    with backend_sending(*[bytes([byte]) for byte in ANSWER[:-2]], b"ok", interval=0.001) as sock:
        response = begin_response(sock)
        assert (response.status, response.getheader("X-A"), response.read()) == (200, "1", b"ok")


@pytest.mark.parametrize("codings", ["chunked", "Chunked", " chunked "])
def test_a_chunked_body_is_unframed(codings):
    answer = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {codings}\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    with backend_sending(answer.encode()) as sock:
        assert begin_response(sock).read() == b"ok"


@pytest.mark.parametrize(
    "codings",
    [
        [b"gzip, chunked"],
        [b"gzip", b"chunked"],
        [b"chunked, chunked"],
        [b"identity"],
        [b"br"],
    ],
    ids=["gzip-chunked", "split", "chunked-twice", "identity", "br"],
)
def test_a_transfer_coding_other_than_chunked_is_refused(codings):
    lines = b"".join(b"Transfer-Encoding: " + coding + b"\r\n" for coding in codings)
    answer = b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n2\r\nok\r\n0\r\n\r\n"
    with backend_sending(answer) as sock, pytest.raises(UnsupportedResponseCoding):
        begin_response(sock)


class PooledConnection:
    """Stands for a backend connection and its pool: tells whether it went back to be reused.

    urllib3 puts a connection it has closed back in the pool too: the pool
    opens a new one in its place.
    """

    def __init__(self):
        self.closed = self.reusable = False

    def _put_conn(self, connection):  # the pool's side
        connection.reusable = not connection.closed

    def close(self):
        self.closed = True


def upstream_body(sock):
    """Return the body the proxy passes on, over urllib3's response as the adapter gets it."""
    final = begin_response(sock)
    connection = PooledConnection()
    raw = urllib3.HTTPResponse(
        body=final,
        headers=urllib3.HTTPHeaderDict(final.headers.items()),
        status=final.status,
        preload_content=False,
        decode_content=False,
        original_response=final,
        pool=connection,
        connection=connection,
        request_method="GET",
    )
    return UpstreamBody(UpstreamResponse(raw, "http://backend.test")), connection


EVENTS = [f"data: {n}\n\n".encode() for n in range(4)]
EVENT_INTERVAL = 0.15


def chunk(data):
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


FRAMINGS = {
    # (header, framed events, end of the body)
    "chunked": (b"Transfer-Encoding: chunked\r\n", [chunk(e) for e in EVENTS], [b"0\r\n\r\n"]),
    "content-length": (b"Content-Length: %d\r\n" % len(b"".join(EVENTS)), EVENTS, []),
    "close-delimited": (b"Connection: close\r\n", EVENTS, [CLOSE]),
}


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_the_body_is_passed_on_as_it_arrives_and_its_connection_returned_at_its_end(framing):
    header, events, end = FRAMINGS[framing]
    head = b"HTTP/1.1 200 OK\r\n" + header + b"\r\n"
    pauses = [EVENT_INTERVAL] * len(events)
    pieces = [head, *(piece for pair in zip(events, pauses, strict=True) for piece in pair), *end]
    with backend_sending(*pieces) as sock:
        started = time.monotonic()
        body, connection = upstream_body(sock)
        pieces, arrivals, reusable = [], [], []
        for data in body:
            pieces.append(data)
            arrivals.append(time.monotonic() - started)
            reusable.append(connection.reusable)
    assert pieces[0] == b""  # the head goes out before the first read
    assert pieces[1:] == EVENTS
    # Sent 0.15 s apart: none waits for the next, or for the end of the body.
    assert arrivals[1] < EVENT_INTERVAL
    assert arrivals[-1] - arrivals[1] >= 2 * EVENT_INTERVAL
    # Back in the pool once the body has ended (a Content-Length body's with its last bytes).
    assert not any(reusable[:-1])
    assert connection.reusable


def test_each_wait_for_the_body_is_bounded_by_the_read_timeout(caplog):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    with backend_sending(head, b"01234", 2.0) as sock:
        body, connection = upstream_body(sock)
        received = []
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            for data in body:
                received.append(data)
        assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 0.5
    assert received == [b"", b"01234"]
    assert connection.closed and not connection.reusable
    assert "Backend http://backend.test broke off its response" in caplog.text


@pytest.mark.parametrize(
    "answer",
    [
        b"Content-Length: 10\r\n\r\n01234",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n",
        b"Transfer-Encoding: chunked\r\n\r\na\r\n01234",
    ],
    ids=["short-length", "no-last-chunk", "short-chunk"],
)
def test_a_body_cut_short_is_an_error_and_its_connection_closed(answer):
    with backend_sending(b"HTTP/1.1 200 OK\r\n" + answer, CLOSE) as sock:
        body, connection = upstream_body(sock)
        received = []
        with pytest.raises(ProtocolError):
            for data in body:
                received.append(data)
    assert b"".join(received) == b"01234"
    assert connection.closed and not connection.reusable


@pytest.mark.parametrize("size", [b"-5", b"0x5", b"+5", b"0_5", b" 5", b"5z", b""])
def test_a_chunk_size_that_is_not_hex_digits_breaks_off_the_body(size):
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size
    # Read on as a chunk, a negative size would pass on all that follows.
    with backend_sending(answer + b"\r\n01234\r\n0\r\n\r\n", CLOSE) as sock:
        body, connection = upstream_body(sock)
        with pytest.raises(ProtocolError):
            assert list(body) == [b""]
    assert connection.closed and not connection.reusable


@pytest.mark.parametrize("size", [b"5", b"05", b"5;name=value", b"5 ; name", b"5 "])
def test_a_chunk_size_of_hex_digits_may_have_extensions(size):
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size
    with backend_sending(answer + b"\r\n01234\r\n0\r\n\r\n") as sock:
        body, connection = upstream_body(sock)
        assert b"".join(body) == b"01234"
    assert connection.reusable
