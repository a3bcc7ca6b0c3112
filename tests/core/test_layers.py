"""The tree is the architecture: each layer imports only the layers below it, and the pure
layer imports neither mitmproxy nor LMDB (it runs where they cannot even be imported)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import provider_cache

PACKAGE = Path(provider_cache.__file__).parent
#: Each layer and what it may import of the package (besides itself and the package root).
LAYERS = {
    "core": set(),
    "storage": {"core"},
    "mitm": {"core", "storage"},
    "cli": {"core", "storage", "mitm"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def layer_modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = LAYERS[layer] | {layer}
    wrong = {
        f"{path.name} imports {name}"
        for path in layer_modules(layer)
        for name in imported_modules(path)
        if name.startswith("provider_cache.") and name.split(".")[1] not in allowed
    }
    assert wrong == set()


@pytest.mark.parametrize("forbidden", ["mitmproxy", "lmdb"])
def test_the_pure_layer_names_neither_mitmproxy_nor_lmdb(forbidden: str) -> None:
    users = [
        path.name
        for path in layer_modules("core")
        if any(name.split(".")[0] == forbidden for name in imported_modules(path))
    ]
    assert users == []


def test_the_pure_layer_imports_with_mitmproxy_and_lmdb_blocked() -> None:
    """Every core module imports in a fresh interpreter where both would fail to import."""
    modules = [f"provider_cache.core.{p.stem}" for p in layer_modules("core")]
    program = (
        "import importlib, sys\n"
        "for name in ('mitmproxy', 'lmdb'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('mitmproxy', 'lmdb'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['lmdb', 'mitmproxy']"  # only the blocking placeholders
    assert len(modules) >= 12


def test_only_the_store_imports_lmdb() -> None:
    """One module owns LMDB; the usage log, the CLI and the hooks reach it through the store."""
    users = [
        path.relative_to(PACKAGE).as_posix()
        for path in sorted(PACKAGE.rglob("*.py"))
        if "lmdb" in {name.split(".")[0] for name in imported_modules(path)}
    ]
    assert users == ["storage/store.py"]
