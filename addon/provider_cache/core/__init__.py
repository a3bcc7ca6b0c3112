"""Pure logic: no mitmproxy, no LMDB, no I/O (tests/core/test_layers.py proves it)."""
