"""The `provider-cache` command (main.py) and the companion scripts' logic (SPEC §7)."""
