"""Choose each TLS connection's certificate by the name the client asks for (SNI).

gunicorn.conf.py hands select_certificate to the worker's TLS context as its
sni_callback when TLS=auto. Each worker keeps the stored certificates in
memory, read when it starts, and one TLS context per certificate, made when
a client first asks for one of its names. The route table's refresher
(table.py) polls the certificate version with the routing version and
reads the certificates again when it moved: a handshake reads memory only,
never the database (but the first, should the worker have failed to read
them at start). A name with no certificate, or no name at all, gets the
listener's own self-signed certificate.
"""

import contextlib
import logging
import os
import ssl
import sys
import threading

from django.core.exceptions import ValidationError

from . import table
from .models import Certificate, RoutingVersion

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_store = None
# The ALPN protocols every certificate's context offers: gunicorn's.
_alpn_protocols = []


class CertificateStore:
    """The stored certificates of one certificate version, by name, with their contexts."""

    def __init__(self, version, rows, alpn_protocols):
        self.version = version
        self.alpn_protocols = alpn_protocols
        self.pems = {row.pk: (row.chain_pem, row.private_key_pem) for row in rows}
        # A host's own certificate first; another's that also names it after.
        self.by_name = {row.host: row.pk for row in rows}
        for row in rows:
            for name in row.names:
                self.by_name.setdefault(name, row.pk)
        self.contexts = {}

    def context_for(self, server_name):
        """Return the TLS context for a name (exact, then its one-label wildcard), or None."""
        name = server_name.lower().rstrip(".")
        pk = self.by_name.get(name)
        if pk is None and "." in name:
            pk = self.by_name.get("*." + name.split(".", 1)[1])
        if pk is None:
            return None
        context = self.contexts.get(pk)
        if context is None:
            context = self.contexts[pk] = server_context(*self.pems[pk], self.alpn_protocols)
        return context


def select_certificate(alpn_protocols):
    """Return an sni_callback that gives each connection its name's certificate.

    Called as the worker's TLS context is made (by gthread, for each
    connection): the first call reads the certificates and has the
    refresher keep them current.
    """
    global _alpn_protocols
    if _store is None:
        _alpn_protocols = list(alpn_protocols)
        if sys.unraisablehook is not quiet_bad_server_names:
            quiet_bad_server_names.previous = sys.unraisablehook
            sys.unraisablehook = quiet_bad_server_names
        if reload_if_changed not in table.certificate_watchers:
            table.certificate_watchers.append(reload_if_changed)
        try:
            load_store()
        except Exception:  # the database is not there yet: the first handshake tries again
            logger.exception("Could not read the certificates")
        table.ensure_refresher()
    return choose_certificate


def choose_certificate(ssl_socket, server_name, _context):
    """Give a TLS connection the certificate of the name it asks for (an sni_callback)."""
    if not server_name:
        return None  # no SNI (an address typed as the host): the fallback certificate
    try:
        store = _store or load_store()
        context = store.context_for(server_name)
    except Exception:
        # A database hiccup or a bad row must not fail the handshake: the
        # client gets the fallback, and the next one tries again.
        logger.exception("Could not load the certificate for %s", server_name)
        return None
    if context is not None:
        ssl_socket.context = context
    return None


def quiet_bad_server_names(unraisable):
    """Log a handshake whose server name is not ASCII in one line, not as a traceback.

    Python decodes the name before choose_certificate is called, and reports
    its failure as an unraisable exception; the handshake fails either way.
    Any other unraisable exception goes to the hook there was before.
    """
    error = unraisable.exc_value
    if (
        isinstance(error, UnicodeDecodeError)
        and error.encoding == "ascii"
        and isinstance(unraisable.object, bytes)
    ):
        logger.warning(
            "TLS handshake refused: a server name that is not ASCII (%r)", unraisable.object[:80]
        )
        return
    quiet_bad_server_names.previous(unraisable)


quiet_bad_server_names.previous = sys.unraisablehook


def reload_if_changed(certificate_version):
    """Read the certificates again if their version moved (called by the refresher)."""
    store = _store
    if store is None or store.version != certificate_version:
        load_store()


def load_store():
    """Read every issued certificate into a new store and make it this worker's."""
    global _store
    with _lock:
        try:
            # The version first: a certificate stored meanwhile moves it past this one.
            version = RoutingVersion.all_versions()[2]
            rows = list(Certificate.objects.exclude(chain_pem="").exclude(private_key_pem=""))
        finally:
            table.release_connection()
        _store = CertificateStore(version, rows, _alpn_protocols)
    return _store


def forget_certificates():
    """Drop this process's certificates: the next handshake reads them again."""
    global _store
    _store = None


def server_context(chain_pem, key_pem, alpn_protocols):
    """Return a server TLS context for one certificate chain and key.

    The PEM goes through memory-backed files that no path names: the key is
    never written to disk.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with memory_file(chain_pem) as chain_path, memory_file(key_pem) as key_path:
        context.load_cert_chain(certfile=chain_path, keyfile=key_path)
    if alpn_protocols:
        context.set_alpn_protocols(alpn_protocols)
    return context


def check_servable(chain_pem, key_pem):
    """Raise ValidationError if the TLS library would refuse to serve this chain and key."""
    try:
        server_context(chain_pem, key_pem, [])
    except ssl.SSLError as error:
        raise ValidationError(
            "The HTTPS listener cannot serve this certificate: %(reason)s.",
            code="unservable",
            params={"reason": error.reason or error.strerror or "refused by OpenSSL"},
        ) from None


@contextlib.contextmanager
def memory_file(text):
    """Yield a path from which text can be read, held in memory only (Linux's memfd)."""
    fd = os.memfd_create("tls-pem", os.MFD_CLOEXEC)
    try:
        os.write(fd, text.encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
