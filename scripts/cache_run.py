#!/usr/bin/env python3
"""Run COMMAND behind a managed provider-cache proxy on 127.0.0.1 (SPEC §7).

Exit: COMMAND's status; with --min-hit-rate and a successful COMMAND, 1 when the
hit rate is below it; 2 when the proxy cannot start or the usage is wrong.
"""

import sys

import _bootstrap  # noqa: F401

from scripts import cli, runner

if __name__ == "__main__":
    sys.exit(cli.run(runner.main, cli.run_parser(), sys.argv[1:]))
