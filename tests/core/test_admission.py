"""Which answers enter the cache (core/admission.py): cache_record_errors and the decision."""

from __future__ import annotations

import pytest

from provider_cache.core.admission import (
    NO_ERRORS,
    Admission,
    RecordErrors,
    admit,
    parse_record_errors,
)
from provider_cache.core.rejections import (
    CUT_SHORT,
    ERROR_STATUS,
    INCOMPLETE,
    STREAM_ERROR,
    TOO_LARGE,
    UNDECODABLE,
)

FOUR = frozenset(range(400, 500))
FIVE = frozenset(range(500, 600))

# --- parse_record_errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "statuses", "stream_errors"),
    [
        ("", frozenset(), False),
        ("   ", frozenset(), False),
        ("429", frozenset({429}), False),
        ("429,503", frozenset({429, 503}), False),
        (" 429 , 503 ", frozenset({429, 503}), False),
        ("4xx", FOUR, False),
        ("5XX", FIVE, False),
        ("4xx,5xx", FOUR | FIVE, False),
        ("4xx,429", FOUR, False),
        ("stream_error", frozenset(), True),
        ("500,stream_error", frozenset({500}), True),
        ("400,599", frozenset({400, 599}), False),
    ],
)
def test_parse_record_errors(value: str, statuses: frozenset[int], stream_errors: bool) -> None:
    assert parse_record_errors(value) == RecordErrors(statuses, stream_errors)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("200", "'200'"),
        ("399", "'399'"),
        ("600", "'600'"),
        ("3xx", "'3xx'"),
        ("2xx", "'2xx'"),
        ("429,", "''"),
        ("429;503", "'429;503'"),
        ("-429", "'-429'"),
        ("errors", "'errors'"),
        ("cut_short", "'cut_short'"),
        ("4xx,oops", "'oops'"),
        ("\uff14\uff12\uff19", "'\uff14\uff12\uff19'"),  # full-width 429: int() takes it
    ],
)
def test_a_bad_item_is_a_value_error_naming_it_and_the_valid_forms(value: str, named: str) -> None:
    with pytest.raises(ValueError, match="cache_record_errors takes error statuses") as info:
        parse_record_errors(value)
    assert str(info.value).endswith(f"got {named}")
    assert "4xx, 5xx or stream_error" in str(info.value)


def test_off_by_default() -> None:
    assert parse_record_errors("") == NO_ERRORS == RecordErrors()


# --- admit -------------------------------------------------------------------------------------

ERRORS = RecordErrors(frozenset({429} | FIVE), stream_errors=False)
WITH_STREAMS = RecordErrors(frozenset({429}), stream_errors=True)


@pytest.mark.parametrize(
    ("status", "policy", "verdict", "transport", "expected"),
    [
        # successes: the format's verdict decides
        (200, NO_ERRORS, None, None, Admission(None)),
        (204, NO_ERRORS, None, None, Admission(None)),
        (200, NO_ERRORS, CUT_SHORT, CUT_SHORT, Admission(CUT_SHORT)),
        (200, NO_ERRORS, INCOMPLETE, None, Admission(INCOMPLETE)),
        (200, NO_ERRORS, STREAM_ERROR, None, Admission(STREAM_ERROR)),
        (200, NO_ERRORS, TOO_LARGE, TOO_LARGE, Admission(TOO_LARGE)),
        (200, NO_ERRORS, UNDECODABLE, None, Admission(UNDECODABLE)),
        # a 2xx stream that failed: only with stream_error, and only if it ended properly
        (200, ERRORS, STREAM_ERROR, None, Admission(STREAM_ERROR)),
        (200, WITH_STREAMS, STREAM_ERROR, None, Admission(None, STREAM_ERROR)),
        (200, WITH_STREAMS, STREAM_ERROR, CUT_SHORT, Admission(CUT_SHORT)),
        (200, WITH_STREAMS, STREAM_ERROR, TOO_LARGE, Admission(TOO_LARGE)),
        (200, WITH_STREAMS, INCOMPLETE, None, Admission(INCOMPLETE)),
        (200, WITH_STREAMS, CUT_SHORT, CUT_SHORT, Admission(CUT_SHORT)),
        # error statuses: rejected unless listed; a listed one is stored if whole
        (500, NO_ERRORS, None, None, Admission(ERROR_STATUS)),
        (302, ERRORS, None, None, Admission(ERROR_STATUS)),
        (404, ERRORS, None, None, Admission(ERROR_STATUS)),
        (429, ERRORS, None, None, Admission(None, ERROR_STATUS)),
        (503, ERRORS, None, None, Admission(None, ERROR_STATUS)),
        (500, NO_ERRORS, CUT_SHORT, CUT_SHORT, Admission(ERROR_STATUS)),
        (500, ERRORS, CUT_SHORT, CUT_SHORT, Admission(CUT_SHORT)),
        (500, ERRORS, TOO_LARGE, TOO_LARGE, Admission(TOO_LARGE)),
        (500, ERRORS, UNDECODABLE, UNDECODABLE, Admission(UNDECODABLE)),
        # an error answer need not follow the success stream's framing
        (503, ERRORS, UNDECODABLE, None, Admission(None, ERROR_STATUS)),
        (503, ERRORS, INCOMPLETE, None, Admission(None, ERROR_STATUS)),
        (429, WITH_STREAMS, STREAM_ERROR, None, Admission(None, ERROR_STATUS)),
        (500, WITH_STREAMS, STREAM_ERROR, None, Admission(ERROR_STATUS)),
    ],
)
def test_admit(
    status: int,
    policy: RecordErrors,
    verdict: str | None,
    transport: str | None,
    expected: Admission,
) -> None:
    assert admit(status, policy, verdict, transport) == expected
