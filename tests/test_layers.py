"""The package's layers: no module imports one of a layer above its own (docs/architecture.md).

Feeds and the vocabulary they speak at the bottom, the command line on top. Imports inside
functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from warehouse.feeds.registry import FEEDS

PACKAGE = Path(__file__).resolve().parent.parent / "warehouse"
LAYERS: list[tuple[str, ...]] = [
    # the vocabulary: records and their schema, settings declarations, redaction, the Parquet contract, feeds
    ("records", "schema", "options", "redact", "lake", "exactjson", "backoff", "feeds"),
    ("config",),  # the config file → typed settings (reads the feed registry)
    ("store",),  # database machinery: URL and engines, migrations, the writer, the spool (no feature)
    ("collect", "lifecycle", "analysis", "replay"),  # what runs on the store
    ("simulate",),  # the vendors' simulators (tests, demo, benchmarks)
    ("cli", "demo", "console", "__main__"),  # the command line
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.startswith("warehouse.") else module
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"warehouse.{top} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "warehouse":
            found.append((name, path))
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [(node.lineno, node.module)]
            if node.module.startswith("warehouse"):  # from warehouse import schema; from warehouse.feeds import saba
                names += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in names if name.startswith("warehouse.")]


@pytest.mark.parametrize(("name", "path"), modules(), ids=[name for name, _ in modules()])
def test_no_module_imports_a_layer_above_its_own(name: str, path: Path) -> None:
    own = layer_of(name)
    above = [f"line {line}: {target}" for line, target in imports(path) if layer_of(target) > own]
    assert not above, f"{name} (layer {own}) imports from a higher layer: {'; '.join(above)}"


# The vendor modules: each feed kind's module, as the registry lists them.
VENDORS = sorted({type(feed).__module__ for feed in FEEDS.values()})


@pytest.mark.parametrize(("name", "path"), modules(), ids=[name for name, _ in modules()])
def test_no_vendor_module_is_imported_outside_feeds_and_simulate(name: str, path: Path) -> None:
    """A vendor's vocabulary reaches the rest through the Feed it registers, not through its module."""
    if name.split(".")[1] in ("feeds", "simulate"):
        return
    found = [f"line {line}: {target}" for line, target in imports(path)
             if any(target == vendor or target.startswith(vendor + ".") for vendor in VENDORS)]
    assert not found, f"{name} imports a vendor module (use its Feed through warehouse.feeds.registry): {found}"
