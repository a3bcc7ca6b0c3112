"""Which answers enter the cache (SPEC §4): complete successes, and the errors that
`cache_record_errors` names ("errors on purpose", so that error-path tests replay offline).

The option is a comma-separated list of error statuses (`429`, `503`), classes (`4xx`,
`5xx`) and `stream_error`: a 2xx stream whose own format reported a failure (`event:
error`, `response.failed`, a Bedrock exception frame, an error line) is recorded only when
the list says `stream_error`, never merely because it names statuses — a 429 test does
not want a flaky mid-stream failure kept for good. Whatever the list, an answer that was
cut, does not decode or is too large is never recorded: its replay would be a different
answer. Pure: no mitmproxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from provider_cache.core.rejections import ERROR_STATUS, STREAM_ERROR

#: The status classes the option accepts, and the statuses each stands for.
CLASSES: dict[str, range] = {"4xx": range(400, 500), "5xx": range(500, 600)}
#: Single statuses the option accepts: the error ones.
ERROR_STATUSES = range(400, 600)
OPTION_FORM = "error statuses (400-599), 4xx, 5xx or stream_error, comma-separated"


@dataclass(frozen=True)
class RecordErrors:
    """cache_record_errors, parsed: the error statuses recorded, and whether 2xx streams
    that reported a failure are."""

    statuses: frozenset[int] = frozenset()
    stream_errors: bool = False


NO_ERRORS = RecordErrors()


def parse_record_errors(value: str) -> RecordErrors:
    """`""` (off), or items such as `429,5xx,stream_error`; ValueError names the bad one."""
    statuses: set[int] = set()
    stream_errors = False
    for raw in value.split(",") if value.strip() else []:
        item = raw.strip().lower()
        if item == STREAM_ERROR:
            stream_errors = True
        elif item in CLASSES:
            statuses.update(CLASSES[item])
        elif item.isascii() and item.isdigit() and int(item) in ERROR_STATUSES:
            statuses.add(int(item))
        else:
            raise ValueError(f"cache_record_errors takes {OPTION_FORM}; got {raw.strip()!r}")
    return RecordErrors(frozenset(statuses), stream_errors)


@dataclass(frozen=True)
class Admission:
    """`rejected`: why the answer is not stored (None: it is); `error`: the reason it is
    stored although it would have been rejected (entry.meta["error"])."""

    rejected: str | None
    error: str | None = None


def admit(
    status: int,
    policy: RecordErrors,
    verdict: str | None = None,
    transport: str | None = None,
) -> Admission:
    """Whether an answer is stored, by its status and, for a stream, by `verdict` (its
    format's rejection, core/streaming.py) and `transport` (cut, undecodable or too large
    whatever the format says). An unstreamed answer has neither: its size and decoding are
    checked as it is stored."""
    if not 200 <= status < 300:
        if status not in policy.statuses:
            return Admission(ERROR_STATUS)
        return Admission(transport) if transport else Admission(None, ERROR_STATUS)
    if verdict == STREAM_ERROR and policy.stream_errors:
        return Admission(transport) if transport else Admission(None, STREAM_ERROR)
    return Admission(verdict)
