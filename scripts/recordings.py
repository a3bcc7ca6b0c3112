#!/usr/bin/env python3
"""Manage a provider-cache store: ls, show, rm, prune, export, import, merge, verify, misses.

Exit 0 on success; 1 when `verify` finds an entry that does not decode;
2 on bad input (missing store, unknown key, unreadable file, bad option).
"""

import sys

import _bootstrap  # noqa: F401

from scripts import admin, cli

if __name__ == "__main__":
    sys.exit(cli.run(admin.main, cli.recordings_parser(), sys.argv[1:]))
