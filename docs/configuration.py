"""Writes docs/configuration.md from the settings' own declarations: every key, its type, default and meaning.

    python docs/configuration.py          # rewrite docs/configuration.md
    python docs/configuration.py --check  # exit 1 if it is out of date (tests/test_docs.py runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from warehouse import config  # noqa: E402
from warehouse.feeds.contract import Tuning  # noqa: E402
from warehouse.feeds.registry import FEEDS  # noqa: E402
from warehouse.options import describe  # noqa: E402

TARGET = ROOT / "docs" / "configuration.md"


def table(cls: type) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, doc in describe(cls):
        rows.append(f"| `{key}` | {kind} | {default.replace('|', '/')} | {doc.replace('|', '/')} |")
    return "\n".join(rows)


def render() -> str:
    parts = ["""# Configuration keys

Written by `python docs/configuration.py` from the declarations in the code (each key's type, default and
meaning are declared once, as a `setting(...)` field; `tests/test_docs.py` fails when this page is out of
date). The README shows a whole config file; this is every key.

An unknown key, a wrong type or a missing required key stops the command with one line naming the file, the
section and the key. Secrets are never in the file: a key marked *(secret)* names the environment variable that
holds one (it must be set, and at least 8 characters: a shorter secret cannot be masked without masking ordinary
text too).
"""]
    for name, cls in (("[database]", config.DatabaseSettings), ("[export]", config.ExportSettings),
                      ("[writer]", config.WriterSettings), ("[retention]", config.RetentionSettings),
                      ("[collector]", config.CollectorSettings)):
        parts.append(f"## `{name}`\n\n{table(cls)}\n")
    kinds = ", ".join(f"`{k}`" for k in FEEDS)
    parts.append(f"## Every `[[feeds]]` entry\n\n`name` (it becomes `source` in every row) and `kind` ({kinds}),"
                 f"\nthen the kind's own keys below, and these:\n\n{table(Tuning)}\n")
    for kind, feed in FEEDS.items():
        note = ""
        limit = (f" At most {feed.max_connections_per_key} feeds of this kind may share a key (the vendor's limit)."
                 if feed.max_connections_per_key else "")
        parts.append(f"## `kind = \"{kind}\"`\n\n{feed.doc}.{note}{limit}\n\n{table(feed.options)}\n")
    return "\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python docs/configuration.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
