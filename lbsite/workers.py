"""gunicorn's gevent worker, as the balancer runs it (gunicorn.conf.py picks it).

Plain gunicorn and gevent, no Django: gunicorn's master loads this module to
find the worker class, before any worker patches the standard library.
"""

import logging
import ssl

from gevent import GreenletExit, Timeout
from gunicorn import util
from gunicorn.workers import ggevent

logger = logging.getLogger("gunicorn.error")


# As gthread does: what an answer left of a request's body is read away, up to
# these bounds, before the next request on the connection; past them the
# connection ends instead.
DISCARD_SECONDS = 5
DISCARD_BYTES = 64 * 1024


class GeventWorker(ggevent.GeventWorker):
    """gunicorn's gevent worker, ending connections the way its gthread worker does.

    gunicorn's evented workers close a connection at once when they are done
    with it. Request bytes still unread then (a request line too long for
    its 414, a body its answer did not need) make the kernel reset the
    connection, and the reset can destroy the answer before the client has
    read it. As gthread does (RFC 9112 §9.6), the worker first sends its
    FIN, reads what the client still sends, and only then closes. And a body
    left unread on a kept-alive connection is read away within bounds, not
    for as long as the client keeps sending it.
    """

    def handle_request(self, listener_name, req, sock, addr):
        try:
            super().handle_request(listener_name, req, sock, addr)
            if not discard_body(req):
                raise StopIteration()
        except StopIteration:  # the connection ends with this answer
            util.close_graceful(sock)
            raise

    def handle_error(self, req, client, addr, exc):
        super().handle_error(req, client, addr, exc)
        util.close_graceful(client)


def discard_body(req):
    """Read away what is left of a request's body, within bounds; whether it all came."""
    if getattr(req.body, "failed", False):  # malformed: where the next request starts is unknown
        return False
    if getattr(req.body.reader, "length", None) == 0 and not req.body.buf.tell():
        return True  # read to its end (or none): no timer to set for nothing to read
    discarded = 0
    try:
        with Timeout(DISCARD_SECONDS, TimeoutError):
            while chunk := req.body.read(8192):
                discarded += len(chunk)
                if discarded > DISCARD_BYTES:
                    return False
    except Exception:  # timed out, broken off, malformed
        return False
    return True


class HandshakeDeadline:
    """A server's TLS context whose handshakes end within a deadline, quietly.

    gevent's server makes the handshake of each accepted connection before
    gunicorn's handling, and its timeouts, begin: a client that never
    finished it would keep its place among the worker's connections for
    good, and a failed one would be printed as a crash with its traceback.
    Either ends the connection's greenlet here, as gunicorn ends one whose
    request head is late, with a line in the log for a failure, as gthread
    writes one.
    """

    def __init__(self, context, seconds):
        self.context = context
        self.seconds = seconds

    def wrap_socket(self, sock, **kwargs):
        try:
            # Read first: the TLS socket takes the descriptor, failed or not.
            client = sock.getpeername()[0]
            with Timeout(self.seconds, TimeoutError("TLS handshake timed out")):
                return self.context.wrap_socket(sock, **kwargs)
        except ssl.SSLError as error:
            logger.warning("TLS handshake with %s failed: %s", client, error)
            raise GreenletExit from None  # the server closes the connection
        except OSError:  # timed out, or the client left: nothing to report
            raise GreenletExit from None

    def __getattr__(self, name):
        return getattr(self.context, name)
