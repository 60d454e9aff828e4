"""Reading books: finding them, cleaning (only header/footer, BOM, CRLF), bad input, splitting."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hellogpt.data.books import BOM, clean, data_path, find_books, read_book, split_text
from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home

HEADER = "The Project Gutenberg eBook of X\r\n\r\nRelease date: 1998\r\n"
START = "*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n"
END = "*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\n"
FOOTER = "Updated editions will replace the previous one.\r\n"


def test_clean_strips_marked_header_and_footer_bom_and_crlf():
    body = "\r\n\r\nChapter 1\r\n\r\nIt is a truth *** universally acknowledged.\r\n\r\n"
    assert clean(BOM + HEADER + START + body + END + FOOTER) == body.replace("\r\n", "\n")


def test_clean_strips_only_the_parts_whose_marker_is_there():
    body = "Once upon a time.\n"
    assert clean(BOM + START + body + END + END) == body  # pg74: BOM, then markers, END twice
    assert clean(body + END + FOOTER) == body
    assert clean(HEADER + START + body) == body


@given(st.lists(st.sampled_from(["\r", "\n", "*** ", "START OF", "END OF", BOM]) | st.text(max_size=4)).map("".join))
@settings(deadline=None)  # no time limit per example: the machine may be busy
def test_clean_changes_nothing_else(text):
    """Text without a leading BOM, CR LF pairs or marker lines comes out exactly as it went in."""
    assume(not text.startswith(BOM) and "\r\n" not in text and "*** START OF" not in text and "*** END OF" not in text)
    assert clean(text) == text


def test_shared_books_are_cleaned(corpus_dir):
    for path in sorted(corpus_dir.glob("*.txt")):
        raw = path.read_text(encoding="utf-8")
        text = read_book(path)
        assert not text.startswith(BOM) and "\r\n" not in text
        assert "*** START OF" not in text and "*** END OF" not in text
        if "*** START OF" not in raw:  # no markers: only the BOM could have gone
            assert text == raw.removeprefix(BOM)
        else:
            assert text in raw and len(text) > 0.9 * len(raw)


def test_find_books_takes_a_folder_or_a_file(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "notes.md").write_text("not a book")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("flat folders only")
    assert find_books(tmp_path) == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert find_books(tmp_path / "notes.md") == [tmp_path / "notes.md"]  # a file given by name is used as is


def test_find_books_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist.*hellogpt data download"):
        find_books(tmp_path / "missing")
    with pytest.raises(UserError, match="no .txt files in .*hellogpt data download"):
        find_books(tmp_path)


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty"),
    (b"PK\x03\x04\x00\x00binary", r"looks binary.*byte offset 4"),
    ("caf\u00e9 au lait".encode("latin-1"), r"not valid UTF-8.*0xe9 at byte offset 3"),
    (b"*** START OF X ***\n\n*** END OF X ***\n", r"no text once the Project Gutenberg header and footer"),
])
def test_read_book_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as e:
        read_book(path)
    assert str(path) in str(e.value)


@given(st.text(), st.floats(0.0, 0.99))
@settings(deadline=None)
def test_split_text_keeps_every_character_and_holds_out_the_end(text, val_fraction):
    train, val = split_text(text, val_fraction)
    assert train + val == text
    assert len(val) == round(len(text) * val_fraction)  # the last part, by characters


def test_split_text_rejects_bad_fractions():
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(UserError, match="--val-fraction"):
            split_text("some text", bad)


def test_data_path(tmp_path):
    home = Home(tmp_path)
    assert data_path(home, None) == tmp_path / "data"
    assert data_path(home, str(tmp_path / "x.txt")) == tmp_path / "x.txt"
