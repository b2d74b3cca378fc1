"""The --loop of the commands that run beside the balancer (healthcheck, certificates)."""

import logging
import time

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)


def run_rounds(one_round, pause, what):
    """Call one_round() every pause seconds until Ctrl-C.

    A round that fails (the database went away a moment) is logged and the
    next one is tried on a new connection: a hiccup must not end a loop that
    operators leave running.
    """
    try:
        while True:
            try:
                one_round()
            except Exception:
                logger.exception("%s failed; trying again", what)
                connection.close()
            close_old_connections()
            time.sleep(pause)
    except KeyboardInterrupt:
        return
