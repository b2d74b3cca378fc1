"""The balancer's two listeners: traffic on gunicorn's bind, its own pages on ADMIN_BIND.

Plain Python, no Django: gunicorn.conf.py reads it in gunicorn's master
process, and the settings read it in every worker. A request's listener is
told by its port (SERVER_PORT, which gunicorn takes from the listening
socket), so the admin's port must be no traffic listener's port.
"""

import os
import re
import socket

DEFAULT_ADMIN_BIND = "127.0.0.1:8001"
OFF_WORDS = {"off", "none"}
# HOST:PORT with a host spelled out ([::1] for IPv6), or an inherited socket.
ADMIN_BIND_RE = re.compile(
    r"(?:(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):(?P<port>\d{1,5})|fd://(?P<fd>\d+))"
)
# gunicorn's master learns the admin listener's port once its socket exists
# (ADMIN_BIND may say port 0, or name an inherited socket) and leaves it here
# for its workers, which are forked after.
ADMIN_PORT_VARIABLE = "LB_ADMIN_LISTENER_PORT"


def admin_bind(environ=os.environ):
    """Return ADMIN_BIND as gunicorn takes a bind (`HOST:PORT`, `fd://N`), or None when off.

    Raises ValueError for anything else: a port alone (gunicorn would read it
    as a host name), no host (every interface), a Unix socket (gunicorn gives
    its requests the SERVER_PORT the client's Host names).
    """
    value = environ.get("ADMIN_BIND", DEFAULT_ADMIN_BIND).strip()
    if value.lower() in OFF_WORDS:
        return None
    match = ADMIN_BIND_RE.fullmatch(value)
    if not match or (match["port"] and int(match["port"]) > 65535):
        raise ValueError(
            f"ADMIN_BIND {value!r}: give HOST:PORT (127.0.0.1:8001, [::1]:8001, "
            "0.0.0.0:8001), fd://N for an inherited TCP socket, or off. The admin listener "
            "is told apart from the traffic listener by its port."
        )
    return value


def admin_port(environ=os.environ):
    """Return the admin listener's port as SERVER_PORT spells it, or None when it is off.

    Under gunicorn the master has found it; elsewhere (runserver, the test
    client) it is ADMIN_BIND's own.
    """
    bind = admin_bind(environ)
    if bind is None:
        return None
    if environ.get(ADMIN_PORT_VARIABLE):
        return environ[ADMIN_PORT_VARIABLE]
    if bind.startswith("fd://"):
        raise ValueError(f"ADMIN_BIND {bind}: an inherited socket works under gunicorn only")
    return bind.rpartition(":")[2]


def tcp_port(sock):
    """Return the port of a TCP socket, or None for any other kind (a Unix socket)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock.getsockname()[1]
