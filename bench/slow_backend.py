"""A slow backend for `make bench`'s capacity runs: every answer comes after a fixed delay.

One asyncio process holds thousands of keep-alive connections at once, so
that the proxies in front of it, not the backend, limit how many requests
wait at a time. It speaks just enough HTTP/1.1: requests with an optional
Content-Length body, pipelined or one after another on a kept-alive
connection, each answered in order with a short `200 OK` (no body for HEAD).
A chunked request body or an unreadable head closes the connection.

`GET /waiting` is answered at once (after the requests before it on its
connection) with the number of requests waiting for their answer, so that
the bench can tell when a proxy has sent on everything it was holding.

    python -m bench.slow_backend --port 8090 --delay 0.1
"""

import argparse
import asyncio
import collections
import resource

BODY = b"This is the slow application.\n"
WAITING_TARGET = "/waiting"
MAX_HEAD_SIZE = 16 * 1024
# wrk opens every connection at once: the kernel's queue must hold them all.
BACKLOG = 4096


def make_answer(body, keep_alive, head_only):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    if not keep_alive:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + (b"" if head_only else body)


# Every answer but /waiting's is one of these four.
ANSWERS = {
    (keep_alive, head_only): make_answer(BODY, keep_alive, head_only)
    for keep_alive in (True, False)
    for head_only in (True, False)
}


class Request:
    """What an answer needs to know of its request: when it is due and how it ends."""

    __slots__ = ("due", "head_only", "keep_alive", "asks_waiting")

    def __init__(self, due, head_only, keep_alive, asks_waiting):
        self.due = due
        self.head_only = head_only
        self.keep_alive = keep_alive
        self.asks_waiting = asks_waiting


class Counter:
    """Requests waiting for their answer, over all connections."""

    waiting = 0


class DelayedHTTP(asyncio.Protocol):
    """One client connection: parse requests as they come, answer each `delay` seconds later."""

    def __init__(self, delay, counter):
        self.delay = delay
        self.counter = counter
        self.buffer = bytearray()
        self.body_left = 0
        self.waiting = collections.deque()
        self.timer = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.loop = asyncio.get_running_loop()

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()
        self.counter.waiting -= sum(not request.asks_waiting for request in self.waiting)
        self.waiting.clear()

    def data_received(self, data):
        self.buffer += data
        while self.buffer:
            if self.body_left:
                skipped = min(self.body_left, len(self.buffer))
                del self.buffer[:skipped]
                self.body_left -= skipped
                continue
            if self.buffer.startswith(b"\r\n"):  # a stray CRLF between requests (RFC 9112 §2.2)
                del self.buffer[:2]
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_SIZE:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            if not self.read_head(head):
                self.transport.close()
                return
            if not self.waiting[-1].keep_alive:
                self.transport.pause_reading()  # nothing after this request is answered
                return

    def read_head(self, head):
        """Queue the answer to one request head; return False for one this server cannot read."""
        request_line, *lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return False
        method, target, version = parts
        headers = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                return False
            headers[name.strip().lower()] = value.strip().lower()
        if "transfer-encoding" in headers:
            return False
        try:
            self.body_left = int(headers.get("content-length", "0"))
        except ValueError:
            return False
        connection = headers.get("connection", "")
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        asks_waiting = target == WAITING_TARGET
        if asks_waiting:  # at once, but never before an earlier request of its connection
            due = self.waiting[-1].due if self.waiting else self.loop.time()
        else:
            due = self.loop.time() + self.delay
            self.counter.waiting += 1
        self.waiting.append(Request(due, method == "HEAD", keep_alive, asks_waiting))
        if self.timer is None:
            self.timer = self.loop.call_at(due, self.answer)
        return True

    def answer(self):
        """Send every answer that is due, in the order of the requests."""
        self.timer = None
        # The loop may fire a timer a hair early: the one it was set for is due all the same.
        now = max(self.loop.time(), self.waiting[0].due)
        while self.waiting and self.waiting[0].due <= now:
            request = self.waiting.popleft()
            if request.asks_waiting:
                body = b"%d\n" % self.counter.waiting
                answer = make_answer(body, request.keep_alive, request.head_only)
            else:
                self.counter.waiting -= 1
                answer = ANSWERS[request.keep_alive, request.head_only]
            self.transport.write(answer)
            if not request.keep_alive:
                self.transport.close()
                return
        if self.waiting:
            self.timer = self.loop.call_at(self.waiting[0].due, self.answer)


def raise_file_limit():
    """Let this process hold as many connections as its hard limit allows."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(host, port, delay):
    loop = asyncio.get_running_loop()
    counter = Counter()
    server = await loop.create_server(
        lambda: DelayedHTTP(delay, counter), host, port, backlog=BACKLOG, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, required=True, help="seconds before each answer")
    arguments = parser.parse_args()
    raise_file_limit()
    asyncio.run(serve(arguments.host, arguments.port, arguments.delay))


if __name__ == "__main__":
    main()
