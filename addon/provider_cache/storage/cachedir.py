"""What lives in a cache directory, and which of it belongs in version control.

data.mdb            the recordings (commit this)
lock.mdb            LMDB's lock file (per machine)
usage/              which run last hit each entry (per machine)
stats.json          the last run's counters
rebuild-state.json  cache_rebuild.py's backoff state
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CACHE_DIR = "recordings"
DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
USAGE_DIR = "usage"
STATS_FILE = "stats.json"
REBUILD_STATE = "rebuild-state.json"

GITIGNORE = f"""\
# provider-cache: commit {DATA_FILE} (the recordings); the rest is per machine.
{LOCK_FILE}
{USAGE_DIR}/
{STATS_FILE}
{REBUILD_STATE}
*.tmp
"""


def ensure_gitignore(cache_dir: Path) -> None:
    """Write the cache directory's .gitignore once, so `git add` picks only the recordings."""
    path = Path(cache_dir) / ".gitignore"
    if not path.exists():
        path.write_text(GITIGNORE)
