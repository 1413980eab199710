"""The fenced code blocks of the README and docs/*.md, for the tests that run them.

A block's info string is its language, then words about it: ```python no-run marks an example
that is not meant to run as written (a fragment of a file, a reader the tests have no session for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))
NO_RUN = "no-run"
_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`\n]*)\n(?P<code>.*?)^(?P=indent)```$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence
    language: str
    words: tuple[str, ...]  # after the language
    code: str

    @property
    def runs(self) -> bool:
        return NO_RUN not in self.words

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path, language: str | None = None) -> list[Block]:
    """The page's fenced blocks (of `language` only, if given), in order, de-indented."""
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        lang, *words = match["info"].split() or [""]
        indent = len(match["indent"])
        code = "".join(line[indent:] for line in match["code"].splitlines(keepends=True))
        if language is None or lang == language:
            found.append(Block(page, text.count("\n", 0, match.start()) + 1, lang, tuple(words), code))
    return found
