"""Why an answer was not stored (SPEC §4, §5): the reasons, each named once.

The stream checks (core/streaming.py and its format modules) return one of these; the
stats count answers not stored under them, in total and per host.
"""

from __future__ import annotations

#: The connection ended (or the client hung up) before the answer's end: mid-event,
#: mid-frame, mid-line, or before its terminal event.
CUT_SHORT = "cut_short"
#: The stream ended properly but without the terminal event its format requires.
INCOMPLETE = "incomplete"
#: The answer's status is not a success.
ERROR_STATUS = "error_status"
#: The stream said the answer failed: `event: error`, `response.failed`, an exception
#: frame, an error line or element.
STREAM_ERROR = "stream_error"
#: Larger than cache_max_body_size, raw or decoded.
TOO_LARGE = "too_large"
#: The bytes are not what the format says: a bad CRC, broken framing, a line that is not
#: JSON, a content coding that does not decode.
UNDECODABLE = "undecodable"

REASONS: tuple[str, ...] = (
    CUT_SHORT,
    INCOMPLETE,
    ERROR_STATUS,
    STREAM_ERROR,
    TOO_LARGE,
    UNDECODABLE,
)

#: Each reason in words, for the log line that says an answer was not recorded.
EXPLAINED: dict[str, str] = {
    CUT_SHORT: "it was cut short",
    INCOMPLETE: "it ended without its terminal event",
    ERROR_STATUS: "its status is not a success",
    STREAM_ERROR: "the stream reported an error",
    TOO_LARGE: "it is over cache_max_body_size",
    UNDECODABLE: "its bytes do not decode as its format",
}
