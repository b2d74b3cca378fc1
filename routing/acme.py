"""Certificates from an ACME CA (Let's Encrypt, or any other) over HTTP-01, with certbot's `acme`.

One account per deployment, its key in the database. For each host due a
certificate: a new key, an order, its HTTP-01 challenge stored in the
database (whichever worker or instance the CA reaches answers it, see
challenges.py), then the certificate, stored with its key. A failure is
stored on the host's certificate with a time before which it is not tried
again, growing with each failure; it never stops the other hosts.
"""

import datetime
import logging
from dataclasses import dataclass

import josepy
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import pem
from .models import AcmeAccount, AcmeChallenge, Certificate, HostRule

logger = logging.getLogger(__name__)

USER_AGENT = "django-lb"
# Seconds the CA has to validate the challenge and issue the certificate.
ORDER_TIMEOUT = 90
# After the n-th failure in a row, no new order for FIRST_RETRY * 2**(n-1),
# at most MAX_RETRY: a CA that refuses is not asked again every minute.
FIRST_RETRY = datetime.timedelta(minutes=5)
MAX_RETRY = datetime.timedelta(days=1)
NETWORK_TIMEOUT = 30
# A challenge token left behind by an order that never finished (its process
# was killed) is deleted after this long.
STALE_CHALLENGE = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Outcome:
    """What one host's turn came to: issued, or the error stored for it."""

    host: str
    error: str = ""

    @property
    def issued(self):
        return not self.error


def due_hosts(now=None):
    """Return the hosts of enabled tls=auto rules that need a certificate now.

    Due: no certificate yet, or one that expires within ACME_RENEW_DAYS,
    unless a failed order's back-off has not run out. Uploaded certificates
    are the operator's to renew.
    """
    now = now or timezone.now()
    renew_before = now + datetime.timedelta(days=settings.ACME_RENEW_DAYS)
    hosts = HostRule.objects.filter(enabled=True, tls="auto").values_list("host", flat=True)
    certificates = {row.host: row for row in Certificate.objects.filter(host__in=list(hosts))}
    due = []
    for host in hosts:
        certificate = certificates.get(host)
        if certificate is None:
            due.append(host)
        elif certificate.uploaded and certificate.issued:
            continue  # the operator's to renew
        elif certificate.next_attempt and certificate.next_attempt > now:
            continue  # backing off after a failure
        elif not certificate.issued or certificate.not_after <= renew_before:
            due.append(host)
    return due


def issue_due_certificates():
    """Order a certificate for every host that is due one; return each host's Outcome."""
    AcmeChallenge.objects.filter(created__lt=timezone.now() - STALE_CHALLENGE).delete()
    hosts = due_hosts()
    if not hosts:
        return []
    try:
        acme_client = account_client()
    except Exception as error:  # no CA, no account: every host's order fails alike
        logger.warning("ACME account at %s: %s", settings.ACME_DIRECTORY_URL, describe(error))
        return [record_failure(host, f"ACME account: {describe(error)}") for host in hosts]
    outcomes = []
    for host in hosts:
        try:
            issue_certificate(acme_client, host)
        except Exception as error:
            logger.warning("Certificate for %s: %s", host, describe(error))
            outcomes.append(record_failure(host, describe(error)))
        else:
            logger.info("Certificate for %s issued", host)
            outcomes.append(Outcome(host))
    return outcomes


def account_client():
    """Return an ACME client logged in with this deployment's account, registered on first use."""
    directory_url = settings.ACME_DIRECTORY_URL
    account = AcmeAccount.objects.filter(directory_url=directory_url).first()
    if account is None:
        account = AcmeAccount.objects.create(
            directory_url=directory_url, key_pem=new_key_pem(rsa_key=True)
        )
    key = josepy.JWKRSA(key=serialization.load_pem_private_key(account.key_pem.encode(), None))
    network = client.ClientNetwork(
        key,
        user_agent=USER_AGENT,
        verify_ssl=settings.ACME_CA_BUNDLE or True,
        timeout=NETWORK_TIMEOUT,
    )
    acme_client = client.ClientV2(client.ClientV2.get_directory(directory_url, network), network)
    if account.uri and account.email == settings.ACME_EMAIL:
        network.account = messages.RegistrationResource(
            uri=account.uri, body=messages.Registration()
        )
        return acme_client
    email = settings.ACME_EMAIL or None
    if account.uri:  # the contact address changed: tell the CA
        network.account = acme_client.update_registration(
            messages.RegistrationResource(uri=account.uri, body=messages.Registration()),
            messages.Registration.from_data(email=email),
        )
    else:
        network.account = acme_client.new_account(
            messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
        )
    account.uri, account.email = network.account.uri, settings.ACME_EMAIL
    account.save(update_fields=["uri", "email"])
    return acme_client


def issue_certificate(acme_client, host):
    """Order a certificate for a host over HTTP-01 and store it with its new key."""
    key_pem = new_key_pem()
    order = acme_client.new_order(crypto_util.make_csr(key_pem.encode(), [host]))
    tokens = []
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue  # the CA still trusts an earlier proof for this name (a renewal)
            challenge = http01_challenge(authorization)
            response, validation = challenge.response_and_validation(acme_client.net.key)
            token = challenge.chall.encode("token")
            AcmeChallenge.objects.update_or_create(
                token=token, defaults={"key_authorization": validation, "host": host}
            )
            tokens.append(token)
            acme_client.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        order = acme_client.poll_and_finalize(order, deadline)
    finally:
        AcmeChallenge.objects.filter(token__in=tokens).delete()
    store_certificate(host, order.fullchain_pem, key_pem, uploaded=False)


def http01_challenge(authorization):
    """Return an authorization's HTTP-01 challenge; the only kind this balancer answers."""
    for challenge in authorization.body.challenges:
        if isinstance(challenge.chall, challenges.HTTP01):
            return challenge
    name = authorization.body.identifier.value
    raise ValueError(f"the CA offers no HTTP-01 challenge for {name}")


def store_certificate(host, chain_pem, key_pem, uploaded):
    """Store a host's certificate and key (checked to match), clearing any failure."""
    details = pem.read_certificate(chain_pem, key_pem)
    with transaction.atomic():
        Certificate.objects.update_or_create(
            host=host,
            defaults={
                "names": details.names,
                "chain_pem": chain_pem,
                "private_key_pem": key_pem,
                "not_before": details.not_before,
                "not_after": details.not_after,
                "issuer": details.issuer,
                "uploaded": uploaded,
                "last_error": "",
                "failures": 0,
                "next_attempt": None,
            },
        )


def record_failure(host, error, now=None):
    """Store a failed order on the host's certificate, with the back-off before the next."""
    now = now or timezone.now()
    with transaction.atomic():
        certificate, _created = Certificate.objects.select_for_update().get_or_create(host=host)
        certificate.failures += 1
        certificate.last_error = error[:2000]
        certificate.next_attempt = now + retry_delay(certificate.failures)
        certificate.save(update_fields=["failures", "last_error", "next_attempt", "updated"])
    return Outcome(host, error)


def retry_delay(failures):
    """Return how long to wait after this many failed orders in a row."""
    return min(FIRST_RETRY * 2 ** (failures - 1), MAX_RETRY)


def new_key_pem(rsa_key=False):
    """Return a new private key in PKCS#8 PEM: ECDSA P-256, or RSA for the account (RS256)."""
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def describe(error):
    """Return one line for an ACME or network error: the CA's own words when it gave some."""
    if isinstance(error, messages.Error):
        return f"{error.typ}: {error.detail}"
    if hasattr(error, "failed_authzrs"):  # ValidationError: the challenge was not met
        details = [
            f"{challenge.error.typ}: {challenge.error.detail}"
            for authorization in error.failed_authzrs
            for challenge in authorization.body.challenges
            if challenge.error is not None
        ]
        return "challenge failed: " + ("; ".join(details) or "no detail from the CA")
    return f"{type(error).__name__}: {error}".splitlines()[0]
