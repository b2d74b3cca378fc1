"""Read a PEM certificate chain and its key: the names, dates and issuer stored with them.

Both are checked before anything is stored: the chain parses (the host's
certificate first, then its intermediates), and the key is the one of the
first certificate. Messages never quote the key.
"""

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from django.core.exceptions import ValidationError


@dataclass(frozen=True)
class CertificateDetails:
    names: list
    not_before: datetime
    not_after: datetime
    issuer: str


def read_certificate(chain_pem, key_pem):
    """Return a chain's details; raise ValidationError if it or its key is not usable."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError:
        raise ValidationError(
            "The certificate chain does not parse: give PEM certificates, the host's "
            "first (-----BEGIN CERTIFICATE----- ...).",
            code="chain_unreadable",
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValidationError(
            "The private key does not parse: give an unencrypted PEM key "
            "(-----BEGIN PRIVATE KEY----- ...).",
            code="key_unreadable",
        ) from None
    except UnsupportedAlgorithm as error:
        raise unsupported("private key's", error) from None
    leaf = chain[0]
    try:
        leaf_key = leaf.public_key()
    except UnsupportedAlgorithm as error:
        raise unsupported("certificate's", error) from None
    if key.public_key().public_bytes(*PUBLIC_FORMAT) != leaf_key.public_bytes(*PUBLIC_FORMAT):
        raise ValidationError(
            "The private key does not match the certificate (the first of the chain).",
            code="key_mismatch",
        )
    return CertificateDetails(
        names=certificate_names(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        issuer=leaf.issuer.rfc4514_string(),
    )


def unsupported(whose, error):
    """Return the refusal of a key whose algorithm (or curve) the TLS library does not know."""
    return ValidationError(
        "The %(whose)s algorithm is not supported (%(reason)s): use an RSA (2048 bits "
        "or more) or ECDSA P-256 or P-384 key.",
        code="key_unsupported",
        params={"whose": whose, "reason": error},
    )


PUBLIC_FORMAT = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_names(certificate):
    """Return the DNS names a certificate covers: its subjectAltName, else its common name."""
    try:
        alternative = certificate.extensions.get_extension_for_oid(
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME
        )
    except x509.ExtensionNotFound:
        return [
            attribute.value.lower()
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return [name.lower() for name in alternative.value.get_values_for_type(x509.DNSName)]


def check_covers(details, host):
    """Raise ValidationError unless the certificate names the host, or a wildcard covering it."""
    wildcard = "*." + host.split(".", 1)[1] if "." in host else None
    if host in details.names or (wildcard and wildcard in details.names):
        return
    raise ValidationError(
        "The certificate is for %(names)s, not for %(host)s.",
        code="host_not_named",
        params={"names": ", ".join(details.names) or "no DNS name", "host": host},
    )
