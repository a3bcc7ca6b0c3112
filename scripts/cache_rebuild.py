#!/usr/bin/env python3
"""The self-healing loop (SPEC §7): replay; if short, re-record and verify, with backoff.

Exit 0: the (verified) hit rate meets --min-hit-rate;
1: it does not, after the attempts, or a rebuild is not yet allowed (backoff);
2: bad usage, or the proxy cannot start.
"""

import sys

import _bootstrap  # noqa: F401

from scripts import cli, rebuild

if __name__ == "__main__":
    sys.exit(cli.run(rebuild.main, cli.rebuild_parser(), sys.argv[1:]))
