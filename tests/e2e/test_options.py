"""Bad option values stop mitmdump at start-up with one clear message."""

from __future__ import annotations

import pytest


def assert_one_clear_line(output: str, message: str) -> None:
    """The addon's error is one log line, not a traceback through mitmproxy's script loader."""
    assert "mitmdump exited with 1" in output
    assert f"provider-cache: {message}" in output
    assert "error in script" not in output and "OptionsError" not in output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "cache_mode",
            "replay-only",
            "cache_mode must be one of record, replay, refresh, read-old-write-new",
        ),
        ("cache_max_body_size", "lots", "cache_max_body_size must be a positive size such as 32m"),
        ("cache_window_size", "0", "cache_window_size must be at least 1"),
        ("cache_ignore_headers", "x foo", "cache_ignore_headers takes header names"),
    ],
)
def test_bad_option_is_a_clear_startup_error(start_proxy, option, value, message) -> None:
    with pytest.raises(RuntimeError) as info:
        start_proxy("record", **{option: value})
    assert_one_clear_line(str(info.value), message)


def test_unusable_cache_dir_is_a_clear_startup_error(start_proxy, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeError) as info:
        start_proxy("record", cache_dir=str(blocker / "cache"))
    assert_one_clear_line(str(info.value), "cannot open cache store")
