"""The completeness checks' CPU per recorded stream, in process (issue 15): the tee with each
format's checker against the same tee with a checker that does nothing, and the SSE tee
against the one before the checks (commit PREVIOUS, read from git at run time).

The streams are the ones the record proxy stored in the same run, with the chunk
boundaries it saw: each stream is fed as the proxy feeds it (recorder_for from its
content type and path, every chunk, the end, the verdict). The timer is this process's
CPU time, best of REPEAT runs, so a busy machine lengthens no figure.
"""

from __future__ import annotations

import subprocess
import time
import timeit
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provider_cache.core import records
from provider_cache.core.streaming import StreamRecorder, recorder_for
from provider_cache.storage.store import Store

ROOT = Path(__file__).resolve().parents[2]
#: The commit before the completeness checks: its core/streaming.py is the SSE-only tee.
PREVIOUS = "060e9e7"
PREVIOUS_FILE = "addon/provider_cache/core/streaming.py"
#: The proxy's bound for a recorded body (cache_max_body_size's default is larger than
#: any stream here, so no tee overflows).
MAX_SIZE = 64 << 20
REPEAT = 7


@dataclass(frozen=True)
class Stream:
    content_type: str
    path: str
    chunks: list[bytes]


class NullChecker:
    """Accepts every stream: the tee's cost without any completeness check."""

    def feed(self, chunk: bytes) -> None:
        pass

    def verdict(self, ended: bool) -> str | None:
        return None


def recorded_streams(cache_dir: Path, path: str, limit: int) -> list[Stream]:
    """Up to `limit` streams the proxy recorded for requests to `path` (query included)."""
    found = []
    with Store(cache_dir) as store:
        for _, value in store.items():
            try:
                entry = records.unpack(value)
            except records.CorruptEntry:  # not an entry (the store's own bookkeeping)
                continue
            response = entry.response
            url_path = "/" + entry.request.url.split("/", 3)[3]
            if response.chunks is None or url_path != path:
                continue
            headers = {k.decode(): v.decode() for k, v in response.headers}
            found.append(Stream(headers.get("content-type", ""), path, response.chunks))
            if len(found) >= limit:
                break
    return found


def checked(stream: Stream) -> None:
    """The tee as the proxy runs it, with the format's checker."""
    recorder = recorder_for(stream.content_type, "", stream.path, MAX_SIZE)
    assert recorder is not None, f"{stream.content_type} is not teed"
    for chunk in stream.chunks:
        recorder(chunk)
    recorder(b"")
    assert recorder.rejection(False) is None, f"{stream.path}: {recorder.rejection(False)}"


def unchecked(stream: Stream) -> None:
    """The same tee with a checker that does nothing."""
    recorder = StreamRecorder(MAX_SIZE, NullChecker(), "")
    for chunk in stream.chunks:
        recorder(chunk)
    recorder(b"")
    recorder.rejection(False)


def previous_tee() -> Callable[[Stream], None] | None:
    """The SSE tee of commit PREVIOUS (its EventParser, no checker), or None outside a git
    checkout. Loaded as a throwaway module: it is measured, never imported by the product."""
    try:
        source = subprocess.run(
            ["git", "show", f"{PREVIOUS}:{PREVIOUS_FILE}"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    module = types.ModuleType("previous_streaming")
    exec(compile(source, f"{PREVIOUS}:{PREVIOUS_FILE}", "exec"), module.__dict__)

    def tee(stream: Stream) -> None:
        recorder = module.StreamRecorder(MAX_SIZE)
        for chunk in stream.chunks:
            recorder(chunk)
        recorder(b"")
        assert recorder.complete(False)

    return tee


def costs(
    tees: dict[str, Callable[[Stream], None]], streams: list[Stream], passes: int
) -> dict[str, float]:
    """CPU microseconds per stream of each tee: the best of REPEAT runs of `passes` over
    `streams`, the tees taking turns (in rotated order) so that drift hits all alike."""
    names = list(tees)
    best = dict.fromkeys(names, float("inf"))
    for r in range(REPEAT):
        for name in names[r % len(names) :] + names[: r % len(names)]:

            def run(tee: Callable[[Stream], None] = tees[name]) -> None:
                for stream in streams:
                    tee(stream)

            seconds = timeit.timeit(run, number=passes, timer=time.process_time)
            best[name] = min(best[name], seconds)
    return {name: 1e6 * best[name] / (passes * len(streams)) for name in names}
