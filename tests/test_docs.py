"""The documentation derived from the code stays true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_configuration_page_lists_every_key_as_declared() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "configuration.py"), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
