"""What lives in a cache directory, and which of it belongs in version control.

data.mdb            the recordings (commit this)
lock.mdb            LMDB's lock file (per machine)
usage/              the runs, and which run last hit each entry (per machine)
stats.json          the last run's counters (the sum of its proxies)
stats.json.d/       each proxy's part of them
rebuild-state.json  cache_rebuild.py's backoff state
pruned-*.json       entries `prune` removed (`recordings import FILE` restores them)
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CACHE_DIR = "recordings"
DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
USAGE_DIR = "usage"
STATS_FILE = "stats.json"
REBUILD_STATE = "rebuild-state.json"
#: `pruned-20260102T030405Z.json`: what one prune removed.
PRUNED_PREFIX, PRUNED_SUFFIX = "pruned-", ".json"

GITIGNORE = f"""\
# provider-cache: commit {DATA_FILE} (the recordings); the rest is per machine.
{LOCK_FILE}
{USAGE_DIR}/
{STATS_FILE}
{STATS_FILE}.d/
{REBUILD_STATE}
{PRUNED_PREFIX}*{PRUNED_SUFFIX}
*.tmp
"""


def ensure_gitignore(cache_dir: Path) -> None:
    """Write the cache directory's .gitignore, so `git add` picks only the recordings.

    One an older version wrote gains the patterns added since; the user's lines stay.
    """
    path = Path(cache_dir) / ".gitignore"
    if not path.exists():
        path.write_text(GITIGNORE)
        return
    text = path.read_text()
    if not text.startswith(GITIGNORE.partition("\n")[0]):
        return  # not ours: never touched
    missing = [line for line in GITIGNORE.splitlines() if line not in text.splitlines()]
    if missing:
        path.write_text(text + ("" if text.endswith("\n") else "\n") + "\n".join(missing) + "\n")
