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
