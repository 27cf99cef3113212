"""What of a stored message is searchable, how it is cut into chunks, and how a hit is shown.

A message's text blocks (and a tool result's text) are its searchable text; tool calls'
JSON arguments and images are not. Long text is cut into chunks of at most
``CHUNK_CHARS`` characters at sentence or word boundaries, overlapping a little so that
a phrase cut in two is still found; each chunk is embedded and matched on its own, and
a hit shows its chunk's best window with the query's terms marked.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

CHUNK_CHARS = 700  # all-MiniLM-L6-v2 reads 256 word pieces: ~700 characters of English
OVERLAP_CHARS = 80
MAX_CHUNKS = 1024  # chunk ids are message seq x 1024 + ordinal; text past them is not indexed
SNIPPET_CHARS = 240
MAX_QUERY_TERMS = 32

# Not worth marking in a snippet (they still count in the lexical ranking, weighted down by it).
_STOP = frozenset(
    "a an and are as at be but by did do does for from had has have how i in is it its me my of on or our so "
    "that the their them they this to was we were what when where which who why will with you your".split()
)
_TERM = re.compile(r"\w+(?:[-./:#]\w+)*", re.UNICODE)
_BREAKS = re.compile(r"(?<=[.!?\n])\s+")


@dataclass(frozen=True, slots=True)
class Searchable:
    role: str  # user | assistant | tool
    text: str


def searchable(role: str, content: Any) -> Optional[Searchable]:
    """The searchable text of a message's content blocks, or None when it has none."""
    if isinstance(content, str):
        return Searchable(role, content) if content.strip() else None
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    results = 0
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_result":
            results += 1
            inner = block.get("content")
            if isinstance(inner, str):
                texts.append(inner)
            elif isinstance(inner, list):
                texts.extend(b["text"] for b in inner if isinstance(b, dict) and isinstance(b.get("text"), str))
    text = "\n".join(t for t in texts if t.strip())
    if not text:
        return None
    return Searchable("tool" if results and role == "user" else role, text)


def chunks(text: str) -> list[str]:
    """``text`` cut into chunks of at most CHUNK_CHARS, at sentence (else word) boundaries."""
    text = text.strip()
    if len(text) <= CHUNK_CHARS:
        return [text] if text else []
    out: list[str] = []
    start = 0
    while start < len(text) and len(out) < MAX_CHUNKS:
        end = min(len(text), start + CHUNK_CHARS)
        if end < len(text):
            window = text[start:end]
            cut = max((m.end() for m in _BREAKS.finditer(window, CHUNK_CHARS // 2)), default=-1)
            if cut < 0:
                cut = window.rfind(" ", CHUNK_CHARS // 2)
            if cut > 0:
                end = start + cut
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        if end >= len(text):
            break
        back = text.rfind(" ", end - OVERLAP_CHARS, end)
        start = back + 1 if back > start else end
    return out


def terms(query: str) -> list[str]:
    """The query's terms (words, and codes such as A-1234 or 2024-05-01 kept whole), at most MAX_QUERY_TERMS."""
    seen: dict[str, None] = {}
    for match in _TERM.finditer(query):
        seen.setdefault(match.group(0).lower(), None)
    return list(seen)[:MAX_QUERY_TERMS]


def _token(prefix: str, value: str) -> str:
    # Digits only: no tokenizer splits them, no stemmer changes them.
    return prefix + str(int(hashlib.sha256(value.encode()).hexdigest()[:15], 16))


def scope_token(account_id: str, scope: str) -> str:
    return _token("9", f"{account_id}\x00{scope}")


def account_token(account_id: str) -> str:
    return _token("8", account_id)


def scope_tokens(account_id: str, scope: str) -> str:
    """What a chunk's lexical entry carries beside its words: its scope's token and its account's."""
    return f"{scope_token(account_id, scope)} {account_token(account_id)}"


# SQLite's lexical entries are numbered by scope: the scope's bucket in the high bits, the
# chunk id (< 2^40: message seq < 2^30) below, so one scope's entries are one rowid range
# that FTS5 seeks to in every word's list, instead of walking those lists whole.
FTS_CHUNK_BITS = 40
FTS_CHUNK_MASK = (1 << FTS_CHUNK_BITS) - 1


def _bucket(account_id: str, scope: str) -> int:
    return int(hashlib.sha256(f"{account_id}\x00{scope}".encode()).hexdigest()[:6], 16) & 0x7FFFFF


def fts_rowid(account_id: str, scope: str, chunk_id: int) -> int:
    if not 0 <= chunk_id <= FTS_CHUNK_MASK:
        raise ValueError(f"chunk id {chunk_id} is out of the lexical index's range")
    return (_bucket(account_id, scope) << FTS_CHUNK_BITS) | chunk_id


def fts_range(account_id: str, scope: str) -> tuple[int, int]:
    """The rowids of a scope's lexical entries (other scopes may share a bucket: the scope token decides)."""
    low = _bucket(account_id, scope) << FTS_CHUNK_BITS
    return low, low | FTS_CHUNK_MASK


def lexical_terms(words: list[str]) -> list[str]:
    """The terms the lexical side matches: common words only when there is nothing else."""
    kept = [w for w in words if w not in _STOP]
    return kept or words


def fts5_query(words: Iterable[str]) -> str:
    """An FTS5 MATCH expression: any of the terms, each a quoted phrase (no operator in a query can act)."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def _pattern(word: str) -> str:
    # A word matches its inflections (refund ~ refunds, refunded): the lexical side stems.
    if len(word) > 4 and word.isalpha():
        return re.escape(word[: max(4, len(word) - 2)]) + r"\w*"
    return re.escape(word)


def word_pattern(word: str) -> re.Pattern[str]:
    """Where ``word`` (or an inflection of it) is in a text."""
    return re.compile(r"(?<!\w)" + _pattern(word) + r"(?!\w)", re.IGNORECASE)


def highlight(text: str, words: list[str], width: int = SNIPPET_CHARS) -> tuple[str, list[dict[str, int]]]:
    """The window of ``text`` (at most ``width`` characters) with the most query terms, and
    where they are in it: ``[{"start", "end"}]`` (character offsets into the snippet)."""
    spans: list[tuple[int, int]] = []
    words = [w for w in words if w not in _STOP]
    if words:
        rx = re.compile(
            r"(?<!\w)(?:" + "|".join(_pattern(w) for w in sorted(words, key=len, reverse=True)) + r")(?!\w)",
            re.IGNORECASE,
        )
        spans = [(m.start(), m.end()) for m in rx.finditer(text)]
    start = 0
    if len(text) > width and spans:
        best, count = spans[0][0], 0
        for i, (s, _) in enumerate(spans):
            n = sum(1 for s2, e2 in spans[i:] if e2 <= s + width)
            if n > count:
                best, count = s, n
        start = max(0, min(best - width // 4, len(text) - width))
        space = text.rfind(" ", 0, start + 1)
        if start and space > start - 20:
            start = space + 1
    end = min(len(text), start + width)
    snippet = text[start:end]
    marks = [{"start": s - start, "end": e - start} for s, e in spans if s >= start and e <= end]
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(text) else ""
    if prefix:
        marks = [{"start": m["start"] + 1, "end": m["end"] + 1} for m in marks]
    return prefix + snippet + suffix, marks
