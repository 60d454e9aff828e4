"""Text from outside: what arrives from a terminal or the command line is not always valid Unicode."""

from __future__ import annotations


def valid_text(text: str) -> str:
    """`text` with what UTF-8 cannot encode replaced by U+FFFD: the surrogates Python makes of invalid UTF-8
    it reads with surrogateescape (a terminal's input, command-line arguments), and any other lone
    surrogate. The tokenizer refuses them; every real character passes unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        escaped = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" and not "\udc80" <= ch <= "\udcff" else ch
                          for ch in text)  # what surrogateescape cannot turn back into bytes
        return escaped.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
