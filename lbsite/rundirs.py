"""Directories a gunicorn master makes for one run, removed when it exits."""

import atexit
import os
import shutil
import tempfile


def run_directory(prefix):
    """Make a directory only this user reads (mode 0700) and remove it when this process exits.

    Made in the master: the workers it forks inherit the exit hook, and leave
    the directory to the master, which outlives them.
    """
    directory = tempfile.mkdtemp(prefix=prefix)
    atexit.register(remove_when_exiting, directory, os.getpid())
    return directory


def remove_when_exiting(directory, owner_pid):
    if os.getpid() == owner_pid:
        shutil.rmtree(directory, ignore_errors=True)
