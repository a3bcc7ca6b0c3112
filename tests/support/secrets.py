"""Planted API keys, and a scan of every byte a run wrote for any of them."""

from __future__ import annotations

from pathlib import Path

OPENAI_KEY = "sk-proj-PLANTED0penaiKey0000000000000000001"
ANTHROPIC_KEY = "sk-ant-api03-PLANTEDanthropicKey00000000002"
AZURE_KEY = "PLANTEDazureApiKey000000000000003"
GOOGLE_KEY = "AIzaPLANTEDgoogleKey00000000000000004"
QUERY_KEY = "PLANTEDqueryKey0000000000000005"
#: Keys some tests send in their own literal forms.
OTHERS = ("sk-unit-test-secret-0001", "sk-test-recordings-0001", "sk-demo-PLANTED")
ALL = (OPENAI_KEY, ANTHROPIC_KEY, AZURE_KEY, GOOGLE_KEY, QUERY_KEY, *OTHERS)
#: Files a test writes with a key in them on purpose (to prove the scan finds one).
CONTROL_SUFFIX = ".secret-control"


def files_containing_secrets(*roots: Path, secrets: tuple[str, ...] = ALL) -> list[str]:
    """Every file under the roots that holds a planted secret, raw or in common encodings."""
    needles = {s.encode() for s in secrets} | {s.encode("utf-16-le") for s in secrets}
    found = []
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        paths = [p for p in paths if root.is_file() or not p.name.endswith(CONTROL_SUFFIX)]
        for path in paths:
            data = path.read_bytes()
            found += [f"{path}: {n[:12]!r}…" for n in needles if n in data]
    return found
