"""The transport's strict reader of a backend's response head.

http.client reads the status line and the body's framing; the header block,
the interim answers and the deadline over the whole head are read here.
"""

import http.client
import io
import re
import time

from .. import headers

# RFC 9112 §7.1: a chunk size is hex digits and nothing else (no sign, no 0x).
CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]+")
# A read held to a deadline may end this much past it rather than pay a
# system call to shrink the socket's timeout: a head that comes in one read
# (nearly every head) costs none.
DEADLINE_LEEWAY = 0.01


class MalformedResponseHeader(http.client.HTTPException):
    """A backend's header line is not `name: value` (RFC 9112 §5), or is folded."""


class UnsupportedResponseCoding(http.client.HTTPException):
    """A backend's Transfer-Encoding is not plain chunked: the body cannot be passed on."""


def transfer_codings(values):
    """Return the transfer codings that Transfer-Encoding values list, lower-cased, in order."""
    return [coding.strip(" \t").lower() for value in values for coding in value.split(",")]


def header_lines(fp):
    """Yield the lines of a header block, up to the empty line, within http.client's limits."""
    for count in range(http.client._MAXHEADERS + 1):
        line = fp.readline(http.client._MAXLINE + 1)
        if len(line) > http.client._MAXLINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return
        if count == http.client._MAXHEADERS:
            raise http.client.HTTPException(f"more than {http.client._MAXHEADERS} headers")
        yield line


def read_response_headers(fp):
    """Read a header block into an HTTPMessage, strictly and without the email parser.

    http.client hands header blocks to the email package, which is slow and
    lenient: a line that is no header silently ends the block, and whatever
    follows (a Content-Length, say) is lost. Here such a line, a name that is
    no token and obsolete line folding are errors: the proxy answers 502
    rather than forward a response it cannot frame (RFC 9112 §5.2 allows it
    for folding). Whitespace between a name and its colon is removed, as
    RFC 9112 §5.1 asks of a proxy. Values are checked when they are passed on.
    """
    message = http.client.HTTPMessage()
    for line in header_lines(fp):
        name, colon, value = line.decode("iso-8859-1").partition(":")
        name = name.rstrip(" \t")
        if not colon or not headers.TOKEN_RE.fullmatch(name):
            raise MalformedResponseHeader(f"header line {line[:80]!r}")
        # As the email parser stores a header, without its per-header checks.
        message.set_raw(name, value.strip(" \t\r\n"))
    return message


class DeadlineReader(io.RawIOBase):
    """A socket's reader that can hold every read to one deadline.

    While a deadline is set, each read from the socket waits only for the
    time left before it, so a backend that sends a byte at a time cannot
    stretch the whole past the deadline; past it, a read raises TimeoutError
    as the socket's own timeout does, which urllib3 reports as a read
    timeout. A socket timeout, not a thread or a signal, so it works the same
    under gevent.
    """

    def __init__(self, raw, sock):
        self.raw = raw
        self.sock = sock
        self.deadline = None
        self.timeout = self.read_timeout = None

    def start_deadline(self):
        """Let the reads from now on take the socket's timeout together, not each."""
        self.timeout = self.read_timeout = self.sock.gettimeout()
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout

    def end_deadline(self):
        """Give each read the socket's whole timeout again."""
        self.deadline = None
        if self.timeout != self.read_timeout:
            self.sock.settimeout(self.read_timeout)
            self.timeout = self.read_timeout

    def readinto(self, buffer):
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            if left < self.timeout - DEADLINE_LEEWAY:
                self.sock.settimeout(left)
                self.timeout = left
        return self.raw.readinto(buffer)

    def readable(self):
        return True

    def fileno(self):
        return self.raw.fileno()

    def close(self):
        if not self.closed:
            self.raw.close()
        super().close()


class FinalResponse(http.client.HTTPResponse):
    """http.client's response, with a fast strict header parser and no 1xx taken as final.

    begin() is http.client's own, but for these changes: every 1xx interim
    answer is skipped, not only 100 (a 103 Early Hints or 102 Processing must
    never be taken for the final response; 101 is left alone, since an
    Upgrade is never forwarded); headers are read by read_response_headers();
    a transfer coding other than chunked is refused; and the socket's timeout
    (urllib3 sets the read timeout) bounds the whole head, interim answers
    included, not each read of it. The body's reads get the timeout each. A
    chunk size must be hex digits (_read_next_chunk_size).
    """

    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        # The same socket reader under a buffer of the same size, with a
        # deadline in between; detached, the first buffer closes nothing.
        self.reader = DeadlineReader(self.fp.detach(), sock)
        self.fp = io.BufferedReader(self.reader)

    def begin(self):
        if self.headers is not None:
            return
        self.reader.start_deadline()
        try:
            self.read_head()
        finally:
            self.reader.end_deadline()

    def read_head(self):
        while True:
            version, status, reason = self._read_status()
            if not 100 <= status < 200 or status == 101:
                break
            for _line in header_lines(self.fp):  # an interim answer's headers: unused
                pass
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = read_response_headers(self.fp)
        codings = transfer_codings(self.headers.get_all("transfer-encoding", ()))
        if codings not in ([], ["chunked"]):
            # Transfer-Encoding is hop-by-hop: the client would get the coded
            # bytes with nothing saying how they are coded.
            raise UnsupportedResponseCoding(f"Transfer-Encoding {', '.join(codings)}")
        self.chunked = bool(codings)
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def _read_next_chunk_size(self):
        """Return the next chunk's size, refusing one that is not plain hex digits.

        http.client's own takes whatever int(size, 16) takes: `0x5`, `+5`,
        `5_0`, and `-5`, after which it would read on to the end of the
        connection as if it were the chunk. A ValueError is its signal that
        the chunked framing is broken: the body is then cut short.
        """
        line = self.fp.readline(http.client._MAXLINE + 1)
        if len(line) > http.client._MAXLINE:
            raise http.client.LineTooLong("chunk size")
        size = line.split(b";", 1)[0].rstrip(b" \t\r\n")
        if not CHUNK_SIZE_RE.fullmatch(size):
            self._close_conn()
            raise ValueError(f"chunk size line {line[:80]!r}")
        return int(size, 16)
