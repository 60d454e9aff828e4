"""Reading books: the bundled two, finding them, cleaning (only header/footer, BOM, CRLF), bad input, splitting."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.data.books import (BOM, BUNDLED_BOOKS, add_bundled_books, bundled_text, clean, data_path, find_books,
                                 read_book, split_text)
from helpers import gutenberg_books

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


def test_books_as_gutenberg_serves_them_are_cleaned(tmp_path):
    """The bundled books (Oz with markers, Pride and Prejudice without) and made-up ones with a BOM, CRLF,
    a header and footer or none of these."""
    shapes = set()
    for book_id, data in gutenberg_books().items():
        path = tmp_path / f"pg{book_id}.txt"
        path.write_bytes(data)
        raw = data.decode("utf-8")
        shapes.add((raw.startswith(BOM), "\r\n" in raw, "*** START OF" in raw))
        text = read_book(path)
        assert not text.startswith(BOM) and "\r\n" not in text
        assert "*** START OF" not in text and "*** END OF" not in text
        plain = raw.removeprefix(BOM).replace("\r\n", "\n")
        if "*** START OF" not in raw:  # no markers: only the BOM and the CRs could have gone
            assert text == plain
        else:
            assert text in plain and len(text) > 0.9 * len(plain)
    assert {(False, False, True), (False, False, False), (True, True, True), (True, True, False),
            (False, True, True)} <= shapes  # every shape was there


def test_bundled_books_are_gutenbergs_files(tmp_path):
    """Pride and Prejudice and Oz come inside the package, byte for byte as Project Gutenberg serves them;
    add_bundled_books writes them as pg<id>.txt and leaves a book already there alone."""
    assert list(BUNDLED_BOOKS) == [1342, 55]
    pride, oz = bundled_text(1342), bundled_text(55)
    assert (len(pride), len(oz)) == (737_944, 212_801)
    assert pride.decode("utf-8").count("Elizabeth") > 600 and b"Dorothy" in oz
    assert oz.startswith(b"*** START OF THE PROJECT GUTENBERG EBOOK 55 ***")
    (tmp_path / "pg55.txt").write_text("my own edition of Oz")
    paths = add_bundled_books(tmp_path)
    assert paths == [tmp_path / "pg1342.txt", tmp_path / "pg55.txt"]
    assert (tmp_path / "pg1342.txt").read_bytes() == pride
    assert (tmp_path / "pg55.txt").read_text() == "my own edition of Oz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pg1342.txt", "pg55.txt"]  # no temporary left
    assert add_bundled_books(tmp_path / "new" / "data")[0].read_bytes() == pride  # the folder is made
    with pytest.raises(UserError, match="is a file, but books go into a folder"):
        add_bundled_books(tmp_path / "pg1342.txt")


def test_find_books_takes_a_folder_or_a_file(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "notes.md").write_text("not a book")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("flat folders only")
    assert find_books(tmp_path) == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert find_books(tmp_path / "notes.md") == [tmp_path / "notes.md"]  # a file given by name is used as is


def test_find_books_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist.*hellogpt data bundled.*hellogpt data download"):
        find_books(tmp_path / "missing")
    with pytest.raises(UserError, match="no .txt files in .*hellogpt data bundled.*hellogpt data download"):
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
