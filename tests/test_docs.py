"""The documentation derived from the code stays true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from warehouse.feeds.registry import FEEDS

ROOT = Path(__file__).resolve().parent.parent


def test_the_configuration_page_lists_every_key_as_declared() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "configuration.py"), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_readme_names_every_feed_kind_of_the_registry() -> None:
    listed = re.findall(r'^kind = "[^"]+" +# (.+)$', (ROOT / "README.md").read_text(), re.M)
    assert listed == [" | ".join(FEEDS)], "the README's `kind = …  # a | b` comment lists the registry's kinds"


def test_the_docs_give_users_timescaledbs_own_installation_and_leave_the_ci_bundle_to_ci() -> None:
    pages = {page.name: page.read_text() for page in (ROOT / "README.md", *(ROOT / "docs").glob("*.md"))}
    assert not [name for name, text in pages.items() if "../shared/" in text], "a user's clone has no ../shared"
    setup = pages["timescaledb.md"].split("## Setting up TimescaleDB", 1)[1].split("\n## ", 1)[0]
    for needed in ("packagecloud.io/timescale/timescaledb", "timescaledb-2-postgresql-", "timescaledb-tune",
                   "timescale/timescaledb:", "shared_preload_libraries = 'timescaledb'"):
        assert needed in setup, needed
    assert "timescaledb/install.sh" in (ROOT / ".ci" / "run").read_text()
