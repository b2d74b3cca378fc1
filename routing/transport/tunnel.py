"""The transport's WebSocket tunnels: a backend connection of their own, and bytes relayed.

Plain sockets, ssl and selectors, no Django. open_tunnel() sends a WebSocket
handshake (an UpstreamRequest) to the backend on a new connection (never one
of the pool's kept-alive ones, which the tunnel would take over for good),
its head byte for byte. A 101 answer gives an Upgraded: the socket and the
bytes the backend sent past the head. Any other answer comes back as an
UpstreamResponse, forwarded as an ordinary response. relay() then copies
bytes both ways until a side closes.

Errors are routing.errors' UpstreamErrors, as send() raises them: NotSent
when no connection could be made (retried elsewhere, 502), UpstreamTimedOut
(504), InvalidUpstreamResponse (502).
"""

import contextlib
import functools
import io
import re
import selectors
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import urllib3
from urllib3.util import SKIP_HEADER

from ..errors import (
    ConnectTimedOut,
    InvalidUpstreamResponse,
    NotSent,
    UpstreamError,
    UpstreamTimedOut,
)
from .parser import FinalResponse, read_response_headers

# The most read from either side at once; a direction holds at most this much
# that its other side has not taken yet (bounded memory, and backpressure).
CHUNK_SIZE = 64 * 1024
# The longest response head taken from a backend: http.client's limits (100
# lines of 64 KiB) would allow far more than any real handshake needs.
MAX_HEAD = 64 * 1024
# Once one side has closed, how long the other gets to finish what it sends.
CLOSE_GRACE = 2.0
# The most moved in one direction before the other gets its turn.
BURST = 16 * CHUNK_SIZE

END_OF_HEAD_RE = re.compile(rb"\r?\n\r?\n")
STATUS_LINE_RE = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: ([^\r\n]*))?\r?\n")
DEFAULT_PORTS = {"http": 80, "https": 443}
HEAD_TIMED_OUT = "ReadTimeout: no complete response head within the read timeout"
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def tokens(value):
    """Return the lower-cased comma-separated tokens of a header value."""
    return {token.strip(" \t").lower() for token in value.split(",")}


def host_header(backend_url):
    """Return the Host a backend gets by default: its own host, and port unless the default."""
    parts = urlsplit(backend_url)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = parts.port
    return host if port in (None, DEFAULT_PORTS[parts.scheme]) else f"{host}:{port}"


def request_head(method, target, header_pairs):
    """Return the bytes of a request head: request line, headers in order, empty line."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in header_pairs]
    # WSGI strings carry each byte as one latin-1 character.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@functools.cache
def tls_context(verify):
    """Return the TLS context for https backends: verify is True, a CA bundle path, or False."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        # As requests does for the other requests: certifi's CAs unless a bundle is given.
        context = ssl.create_default_context(
            cafile=requests.certs.where() if verify is True else verify
        )
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass
class Upgraded:
    """A backend's 101: its socket, the bytes it sent past the head, and the head itself."""

    sock: socket.socket
    leftover: bytes
    version: int  # 11, as http.client has it
    reason: str
    headers: list  # (name, value) pairs in order, repeats kept

    status = 101

    def header_values(self, name):
        return [value for key, value in self.headers if key.lower() == name.lower()]


def open_tunnel(request):
    """Send a WebSocket handshake (an UpstreamRequest) to its backend; read the answer's head.

    Returns an Upgraded for a 101, else an UpstreamResponse whose body is
    still to be read (it owns the socket then). Raises ConnectTimedOut or
    NotSent when no connection could be made, UpstreamTimedOut, and
    UpstreamError or InvalidUpstreamResponse for the rest.
    """
    from . import UpstreamResponse  # the package imports this module

    pairs = [("Host", request.headers.get("Host") or host_header(request.base_url))]
    # SKIP_HEADER marks what urllib3 must not add: here nothing is added.
    pairs += [
        (name, value)
        for name, value in request.headers.items()
        if name != "Host" and value != SKIP_HEADER
    ]
    head = request_head(request.method, request.target, pairs)
    answer = connect_and_send(
        request.base_url, head, request.connect_timeout, request.read_timeout, request.tls_verify
    )
    if isinstance(answer, Upgraded):
        return answer
    return UpstreamResponse(Refusal(answer), request.base_url)


class Refusal:
    """A backend's answer other than 101, in the form UpstreamResponse reads urllib3's."""

    def __init__(self, final):
        self.final = final
        self.status = final.status
        self.reason = final.reason
        self.version = final.version
        self.headers = urllib3.HTTPHeaderDict()
        for name, value in final.headers.items():
            self.headers.add(name, value)

    def read1(self, amount, decode_content=False):
        return self.final.read1(amount)

    def close(self):
        self.final.close()


def connect_and_send(backend_url, head, connect_timeout, read_timeout, verify=True):
    """Connect to a backend, send the request head, and read its answer's head.

    Returns an Upgraded for a 101, else the answer as a FinalResponse whose
    body is still to be read (it owns the socket then).
    """
    parts = urlsplit(backend_url)
    address = (parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme])
    try:
        sock = socket.create_connection(address, timeout=connect_timeout)
    except TimeoutError as error:
        raise ConnectTimedOut(f"ConnectTimeout: connecting to {backend_url}: {error}") from error
    except OSError as error:
        raise NotSent(f"ConnectionError: connecting to {backend_url}: {error}") from error
    try:
        if parts.scheme == "https":
            try:
                sock = tls_context(verify).wrap_socket(sock, server_hostname=parts.hostname)
            except ssl.SSLError as error:
                raise NotSent(f"SSLError: {backend_url}: {error}") from error
            except TimeoutError as error:
                raise ConnectTimedOut(f"ConnectTimeout: TLS with {backend_url}: {error}") from error
        sock.settimeout(read_timeout)
        try:
            sock.sendall(head)
        except OSError as error:
            raise UpstreamError(f"ConnectionError: sending to {backend_url}: {error}") from error
        return read_answer(sock, read_timeout)
    except UpstreamError:
        sock.close()
        raise
    except OSError as error:  # a CA bundle gone missing, and the like
        sock.close()
        raise UpstreamError(f"{type(error).__name__}: {backend_url}: {error}") from error
    except BaseException:
        sock.close()
        raise


def read_answer(sock, read_timeout):
    """Read a backend's answer head within read_timeout: an Upgraded for 101, else FinalResponse.

    Interim answers (100, 103) are skipped, as on the other requests.
    """
    deadline = time.monotonic() + read_timeout
    data = b""
    while True:
        end = END_OF_HEAD_RE.search(data)
        if end is None:
            if len(data) > MAX_HEAD:
                raise invalid(f"head over {MAX_HEAD} bytes")
            data += receive(sock, deadline)
            continue
        status_line = STATUS_LINE_RE.match(data)
        if status_line is None:
            first_line = data.partition(b"\n")[0]
            raise invalid(f"status line {first_line[:80]!r}")
        status = int(status_line[2])
        if status == 101 or not 100 <= status < 200:
            break
        data = data[end.end() :]  # an interim answer: the final one follows
    if status != 101:
        # http.client reads the head again, then the body by its framing,
        # each read of it within the read timeout.
        sock.settimeout(read_timeout)
        answer = FinalResponse(Prefixed(sock, data), method="GET")
        try:
            answer.begin()
        except TimeoutError as error:  # not expected: the head is all here
            raise UpstreamTimedOut(f"ReadTimeout: {error}") from error
        except Exception as error:
            answer.close()
            raise invalid(f"{type(error).__name__}: {error}") from error
        return answer
    if status_line[1] != b"HTTP/1.1":
        raise invalid("101 from an HTTP/1.0 server")
    try:
        message = read_response_headers(io.BytesIO(data[status_line.end() : end.end()]))
    except Exception as error:
        raise invalid(f"{type(error).__name__}: {error}") from error
    if "websocket" not in tokens(", ".join(message.get_all("upgrade", ()))):
        raise invalid("101 without Upgrade: websocket")
    return Upgraded(
        sock=sock,
        leftover=data[end.end() :],
        version=11,
        reason=(status_line[3] or b"").decode("iso-8859-1").strip(),
        headers=list(message.items()),
    )


def receive(sock, deadline):
    """Return what arrives on a socket before the deadline; raise when nothing can."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise UpstreamTimedOut(HEAD_TIMED_OUT)
    sock.settimeout(left)
    try:
        chunk = sock.recv(CHUNK_SIZE)
    except TimeoutError as error:
        raise UpstreamTimedOut(HEAD_TIMED_OUT) from error
    except OSError as error:
        raise UpstreamError(f"ConnectionError: reading the answer: {error}") from error
    if not chunk:
        raise UpstreamError("ConnectionError: the backend closed the connection without an answer")
    return chunk


class Prefixed:
    """What http.client asks of a socket, for a response whose first bytes are already read."""

    def __init__(self, sock, data):
        self.sock = sock
        self.data = data

    def makefile(self, mode):
        return io.BufferedReader(PrefixedReader(self.sock, self.data))

    def gettimeout(self):
        return self.sock.gettimeout()

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)


class PrefixedReader(io.RawIOBase):
    """Read the given bytes first, then the socket; closing it closes the socket."""

    def __init__(self, sock, data):
        self.sock = sock
        self.data = memoryview(data)

    def readinto(self, buffer):
        if self.data:
            count = min(len(buffer), len(self.data))
            buffer[:count] = self.data[:count]
            self.data = self.data[count:]
            return count
        return self.sock.recv_into(buffer)

    def readable(self):
        return True

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        if not self.closed:
            self.sock.close()
        super().close()


def invalid(detail):
    """Return the failure of a backend's answer that is no usable handshake answer."""
    return InvalidUpstreamResponse(f"InvalidUpstreamResponse: {detail}")


class Direction:
    """Bytes from one socket to the other: what was read and not yet sent, and counts."""

    def __init__(self, source, sink, pending):
        self.source = source
        self.sink = sink
        self.pending = memoryview(pending)
        self.ended = False  # the source sent its last byte (EOF)
        self.done = False  # ... and all of it reached the sink, which was told
        self.sent = 0

    def step(self):
        """Move what can be moved without waiting; return whether anything moved.

        Raises OSError when either side breaks off.
        """
        moved = 0
        while moved < BURST:
            if self.pending:
                try:
                    count = self.sink.send(self.pending)
                except WOULD_BLOCK:
                    break
                self.pending = self.pending[count:]
                self.sent += count
                moved += count
            elif self.ended:
                if not self.done:
                    self.done = True
                    half_close(self.sink)
                    return True
                break
            else:
                try:
                    data = self.source.recv(CHUNK_SIZE)
                except WOULD_BLOCK:
                    break
                if not data:
                    self.ended = True
                    continue
                self.pending = memoryview(data)
                moved += 1
        return moved > 0

    def wants(self):
        """Return (socket, event) this direction waits for, or None."""
        if self.pending:
            return self.sink, selectors.EVENT_WRITE
        if not self.ended:
            return self.source, selectors.EVENT_READ
        return None


def half_close(sock):
    """Tell a peer no more bytes come (FIN); a TLS socket is left for the end."""
    if isinstance(sock, ssl.SSLSocket):
        return  # shutting down a TLS socket's writing would drop its TLS state
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def relay(client_sock, client_leftover, backend_sock, backend_leftover, idle_timeout):
    """Copy bytes both ways until either side closes; return (bytes up, bytes down).

    The leftovers go first: what each side sent past its head. When a side
    closes, what it sent is passed on and the other side gets the close
    (FIN), then CLOSE_GRACE seconds to finish; a tunnel with no byte either
    way for idle_timeout seconds ends too. Both sockets are shut down when
    it ends: the backend's is closed, the client's is left to its server.
    Works with blocking sockets of threads and with gevent's (selectors is
    patched there); either may be TLS.
    """
    up = Direction(client_sock, backend_sock, client_leftover)
    down = Direction(backend_sock, client_sock, backend_leftover)
    timeouts = [(sock, sock.gettimeout()) for sock in (client_sock, backend_sock)]
    selector = selectors.DefaultSelector()
    try:
        for sock in (client_sock, backend_sock):
            sock.setblocking(False)
        last_activity = time.monotonic()
        closing_deadline = None
        while True:
            try:
                moved = up.step() | down.step()
            except OSError:
                break  # reset, broken pipe: the tunnel is over
            now = time.monotonic()
            if moved:
                last_activity = now
            if up.done and down.done:
                break
            if closing_deadline is None and (up.done or down.done):
                closing_deadline = now + CLOSE_GRACE
                if isinstance(client_sock, ssl.SSLSocket) or isinstance(
                    backend_sock, ssl.SSLSocket
                ):
                    break  # no half-close over TLS: the close ends the tunnel
            if moved:
                time.sleep(0)  # let other greenlets (or threads) run between bursts
                continue
            deadline = last_activity + idle_timeout
            if closing_deadline is not None:
                deadline = min(deadline, closing_deadline)
            if now >= deadline:
                break
            events = {}
            for direction in (up, down):
                wanted = direction.wants()
                if wanted is not None:
                    events[wanted[0]] = events.get(wanted[0], 0) | wanted[1]
            if not events:
                break
            for sock, mask in events.items():
                selector.register(sock, mask)
            try:
                selector.select(deadline - now)
            finally:
                for sock in events:
                    selector.unregister(sock)
    finally:
        selector.close()
        for sock, timeout in timeouts:
            with contextlib.suppress(OSError):  # a socket that is gone already
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)
        backend_sock.close()
    return up.sent, down.sent
