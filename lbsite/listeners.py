"""The balancer's two listeners: traffic on gunicorn's bind, its own pages on ADMIN_BIND.

Plain Python, no Django: gunicorn.conf.py reads it in gunicorn's master
process, and the settings read it in every worker. A request's listener is
told by its port (SERVER_PORT, which gunicorn takes from the listening
socket), so the admin's port must be no traffic listener's port.
"""

import os
import socket

from gunicorn.util import parse_address

DEFAULT_ADMIN_BIND = "127.0.0.1:8001"
OFF_WORDS = {"", "off", "none", "0"}
# gunicorn's master finds the admin listener's port as it starts and leaves
# it here for its workers (an inherited socket's port is known only there).
ADMIN_PORT_VARIABLE = "LB_ADMIN_LISTENER_PORT"


def admin_bind(environ=os.environ):
    """Return ADMIN_BIND as gunicorn takes a bind (`HOST:PORT`, `fd://N`), or None when off."""
    value = environ.get("ADMIN_BIND", DEFAULT_ADMIN_BIND).strip()
    if value.lower() in OFF_WORDS:
        return None
    try:
        address = parse_address(value)
    except RuntimeError as error:
        raise ValueError(f"ADMIN_BIND {value!r}: {error}") from None
    if isinstance(address, str):
        raise ValueError(
            f"ADMIN_BIND {value!r}: give HOST:PORT or fd://N (the admin listener is told "
            "apart from the traffic listener by its port)"
        )
    return value


def admin_port(environ=os.environ):
    """Return the admin listener's port as SERVER_PORT spells it, or None when it is off."""
    bind = admin_bind(environ)
    if bind is None:
        return None
    return environ.get(ADMIN_PORT_VARIABLE) or str(port_of(bind))


def port_of(bind):
    """Return the TCP port a gunicorn bind listens on; None for a Unix socket.

    An inherited socket (`fd://N`) is asked for its port, which works where
    the descriptor is still the one inherited: in gunicorn's master as it starts.
    """
    address = parse_address(bind)
    if isinstance(address, str):
        return None
    if isinstance(address, int):
        with socket.socket(fileno=os.dup(address)) as sock:
            return sock.getsockname()[1]
    return address[1]
