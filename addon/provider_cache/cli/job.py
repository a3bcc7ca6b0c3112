"""The command that `run` and `rebuild` run, stopped as a whole, as a shell stops a job.

The command gets its own process group, and a signal that stops provider-cache is
forwarded to that group: a test runner's workers are stopped with it, where a signal to
the command alone left them running. At a terminal, in its foreground, the command stays
in provider-cache's group instead: it can read the terminal, and Ctrl-C (or Ctrl-Z)
reaches every process of it from the terminal itself, as without provider-cache.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from provider_cache.cli.args import Terminated

#: How long a signalled command may take to finish before what is left of it is killed.
GRACE = 10.0


def at_the_terminal() -> bool:
    """Whether this process is in the foreground of its terminal: a user at a prompt."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (AttributeError, OSError, ValueError):  # no stdin, closed, or not a terminal
        return False


def signal_of(stopping: BaseException) -> int:
    """The signal to pass on to the command for what is stopping provider-cache."""
    if isinstance(stopping, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(stopping, Terminated):
        return stopping.signum
    return signal.SIGTERM


def exit_status(returncode: int) -> int:
    """A death by signal N as a shell reports it, 128 + N (subprocess says -N)."""
    return 128 - returncode if returncode < 0 else returncode


class Job:
    """Raises OSError as subprocess.Popen does when the command cannot be started."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        own_group: bool | None = None,
        grace: float = GRACE,
    ):
        self.own_group = not at_the_terminal() if own_group is None else own_group
        self.grace = grace
        self.proc = subprocess.Popen(argv, env=env, process_group=0 if self.own_group else None)

    def wait(self) -> int:
        return exit_status(self.proc.wait())

    def stop(self, signum: int) -> None:
        """Pass `signum` on, wait up to the grace period, then SIGKILL what is left.

        A second signal meanwhile cuts the wait short. At the terminal, Ctrl-C has reached
        the command already: it is not sent twice.
        """
        if self.own_group or signum != signal.SIGINT:
            self._send(signum)
        deadline = time.monotonic() + self.grace
        try:
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            if self._running():
                self._send(signal.SIGKILL)
            self.proc.wait()

    def _running(self) -> bool:
        """The command, or in its own group any process it started, is still there."""
        if self.proc.poll() is None:  # poll() reaps it: a zombie would count as a member
            return True
        if not self.own_group:
            return False
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member that changed user (setuid): still there
            return True
        return True

    def _send(self, signum: int) -> None:
        try:
            if self.own_group:
                os.killpg(self.proc.pid, signum)
            else:
                self.proc.send_signal(signum)
        except (ProcessLookupError, PermissionError):  # gone meanwhile, or not ours to stop
            pass
