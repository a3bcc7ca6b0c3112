#!/usr/bin/env python3
"""Summarise provider-cache stats and gate CI on the hit rate (SPEC §7).

Exit 0: at or above --min-hit-rate; 1: below; 2: input missing or unreadable.
"""

import sys

import _bootstrap  # noqa: F401

from scripts import cli, gate

if __name__ == "__main__":
    sys.exit(cli.run(gate.main, cli.stats_parser(), sys.argv[1:]))
