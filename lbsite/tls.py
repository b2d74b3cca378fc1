"""TLS=auto: the balancer's gunicorn serves HTTPS with each host's certificate from the database.

Plain Python, no Django: gunicorn.conf.py reads it in gunicorn's master.
gunicorn turns TLS on for a master whose settings name a certificate file;
under TLS=auto that is a self-signed certificate made at start, which only
clients that ask for no name, or for a name without a certificate, get
(routing/tls.py chooses the others' by SNI).
"""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lbsite.rundirs import run_directory

TLS_MODES = ("off", "auto")
FALLBACK_NAME = "django-lb fallback certificate"


def tls_mode(environ=os.environ):
    """Return TLS as set in the environment: off (default) or auto."""
    mode = (environ.get("TLS") or "off").strip().lower()
    if mode not in TLS_MODES:
        raise ValueError(f"TLS is off or auto, not {mode!r}.")
    return mode


def fallback_certificate_files():
    """Make a self-signed certificate and key, each in a file only this user reads; return paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FALLBACK_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    directory = run_directory("lb-tls-")
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(certfile, "wb") as file:
        file.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
        file.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return certfile, keyfile


def alpn_protocols(http_protocols):
    """Return the ALPN names gunicorn offers for its http_protocols setting."""
    if "h2" not in http_protocols:
        return []
    names = {"h2": "h2", "h1": "http/1.1"}
    return [names[protocol] for protocol in http_protocols if protocol in names]
