"""Whether a stored answer is an error (SPEC §4, errors on purpose), as `recordings ls`,
`show` and mitmweb mark it.

An entry recorded because `cache_record_errors` let it in carries the reason it would
otherwise have been rejected in `meta["error"]`; an entry imported from elsewhere carries
no such note, so an error status marks it too. Marked, a replayed failure is not taken for
a recording gone wrong, nor a recording gone wrong for a deliberate one.
"""

from __future__ import annotations

from collections.abc import Mapping

from provider_cache.core.rejections import ERROR_STATUS

#: Statuses from here up are errors.
FIRST_ERROR_STATUS = 400


def error_of(meta: Mapping[str, object], status: int | None) -> str | None:
    """The reason this answer is an error (`stream_error`, `error_status`, …), or None."""
    noted = meta.get("error")
    if noted:
        return noted if isinstance(noted, str) else ERROR_STATUS
    return ERROR_STATUS if status is not None and status >= FIRST_ERROR_STATUS else None


def recorded_on_purpose(meta: Mapping[str, object]) -> bool:
    """Whether the proxy recorded it as an error under cache_record_errors (not imported)."""
    return bool(meta.get("error"))
