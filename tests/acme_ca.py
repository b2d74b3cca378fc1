"""A real ACME CA for the tests: Let's Encrypt's Pebble, with pebble-challtestsrv as its DNS.

Debian's `pebble` package ships both (`make pebble` installs it). Every
name resolves to 127.0.0.1 unless a test says otherwise, and Pebble
validates HTTP-01 challenges on the port the test gives it: the
balancer's traffic listener.
"""

import datetime
import json
import socket
import subprocess
import time

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import STARTUP_TIMEOUT, self_signed_certificate, stop


def free_port():
    """Return a loopback port that was free a moment ago (for servers that bind their own)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pebble:
    """Pebble and its DNS server on free loopback ports; stopped by PID."""

    def __init__(self, home, http_port):
        self.home = home
        self.cert, key = self_signed_certificate(home, name="pebble-")
        self.dns_port = free_port()
        self.dns_management_port = free_port()
        self.acme_port = free_port()
        self.management_port = free_port()
        self.directory_url = f"https://127.0.0.1:{self.acme_port}/dir"
        config = home / "pebble-config.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.acme_port}",
                        "managementListenAddress": f"127.0.0.1:{self.management_port}",
                        "certificate": str(self.cert),
                        "privateKey": str(key),
                        "httpPort": http_port,
                        "tlsPort": free_port(),
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        self.processes = []
        self.log = open(home / "pebble.log", "wb")  # noqa: SIM115
        self.start(
            [
                "pebble-challtestsrv",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                f"127.0.0.1:{self.dns_port}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{self.dns_management_port}",
            ],
            {},
        )
        self.start(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            # No pauses before validating, and no nonces refused at random:
            # the tests wait for nothing and retry nothing.
            {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        )
        self.wait_until_ready()
        self.root = home / "pebble-root.pem"
        self.root.write_text(self.management("/roots/0").text)

    def start(self, command, env):
        self.processes.append(
            subprocess.Popen(
                command,
                env={"PATH": "/usr/bin:/bin", **env},
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        )

    def wait_until_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited: see {self.home}/pebble.log")
            try:
                requests.get(self.directory_url, verify=str(self.cert), timeout=1)
                requests.get(f"http://127.0.0.1:{self.dns_management_port}/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("Pebble did not start")

    def management(self, path):
        response = requests.get(
            f"https://127.0.0.1:{self.management_port}{path}", verify=str(self.cert), timeout=5
        )
        response.raise_for_status()
        return response

    def resolve(self, host, address):
        """Make the CA's DNS answer this address for a host (instead of 127.0.0.1)."""
        requests.post(
            f"http://127.0.0.1:{self.dns_management_port}/add-a",
            json={"host": f"{host}.", "addresses": [address]},
            timeout=5,
        ).raise_for_status()

    def stop(self):
        for process in reversed(self.processes):
            stop(process)
        self.log.close()


def make_certificate(names, days=90, start_days_ago=1):
    """Return (chain PEM, key PEM) of a self-signed certificate for the names, made in memory."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=start_days_ago))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
