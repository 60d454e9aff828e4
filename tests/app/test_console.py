"""The console application (`python main.py`) driven as a user drives it: answers piped into
standard input, or typed into a pseudo-terminal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from hellogpt.core.paths import Home
from hellogpt.data.books import bundled_text
from helpers import bundled, closed_port_url, gutenberg_books, serve, write_mirror

pytestmark = pytest.mark.integration
MAIN = Path(__file__).resolve().parents[2] / "main.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def app(home: Home, *args: str, answers: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """`python main.py --home HOME ARGS` with `answers` as its standard input."""
    return subprocess.run([sys.executable, str(MAIN), "--home", str(home.root), *args], input=answers,
                          capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture
def home(tiny_home, tmp_path) -> Home:
    """A copy of the tiny trained home (the application may write its history there)."""
    copy = Home(tmp_path / "home")
    shutil.copytree(tiny_home.root, copy.root)
    return copy


# --- piped standard input --------------------------------------------------------------------------------


def test_prompt_loop_through_piped_input(home):
    answers = ("Elizabeth\n/temp 0\n/max 12\n/seed 3\nElizabeth\n/top-k 5\n/top-p 0.5\n/penalty 1.3\n/info\n\n"
               "/nonsense\n/help\nX\n")
    r = app(home, "--model-name", "tiny", answers=answers)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Model 'tiny', serial 1" in out
    assert "temperature: 0.0" in out and "max new tokens: 12" in out and "seed: 3" in out
    assert "top-k: 5" in out and "top-p: 0.5" in out and "repetition penalty: 1.3" in out
    assert ("settings: temperature 0.0, top-k 5, top-p 0.5, max 12 tokens, repetition penalty 1.3, seed 3"
            in out)  # /info shows them
    assert re.search(r"^  /penalty \[R\] +repetition penalty", out, re.MULTILINE)  # /help lists it
    assert "validation bits per byte 7.500" in out
    assert "seed 3)" in out  # the second continuation's stats
    assert out.count("\nElizabeth") >= 2  # each continuation follows its prompt
    assert "Type some text" in out and "Unknown command /nonsense" in out
    assert out.rstrip().endswith("Bye.") and r.stderr == ""


def test_end_of_input_at_the_prompt_exits_cleanly(home):
    r = app(home, "--model-name", "tiny", answers="")
    assert r.returncode == 0 and r.stdout.rstrip().endswith("Bye.")


def test_bad_settings_and_switching_models_do_not_end_the_session(home):
    answers = ("/temp -2\n/top-p 0\n/penalty 0\n/penalty lots\n/penalty\n/max lots\n/model nope\n/model 7\n/model\n"
               "/model tiny 1\n/model ../tiny\n/quit\n")
    r = app(home, "--model-name", "tiny", answers=answers)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "error: Temperature must be 0 (greedy) or more" in out
    assert "error: Top-p must be above 0" in out
    assert "error: Repetition penalty must be above 0" in out
    assert "error: repetition penalty takes a number; got 'lots'" in out
    assert "repetition penalty: 1.0" in out  # /penalty alone shows the value, unchanged by the bad ones
    assert "error: '../tiny' cannot be a model name" in out
    assert "error: max new tokens takes a whole number; got 'lots'" in out
    assert "error: Model 'nope' has no checkpoint" in out
    assert "error: Model 'tiny' has no serial 7" in out
    assert "tiny *" in out  # the list marks the model in use
    assert out.count("Model 'tiny', serial 1") == 2  # loaded at start, and again by /model tiny 1
    assert out.rstrip().endswith("Bye.")


def test_end_of_input_at_a_question_names_the_flag(tmp_path, book):
    home = Home(tmp_path)
    home.data_dir.mkdir()
    shutil.copy(book, home.data_dir)
    r = app(home, answers="", timeout=60)  # books but no tokenizer: the app asks to train one
    assert r.returncode == 1
    assert "Train the tokenizer now?" in r.stdout
    assert "Input ended" in r.stderr and "--yes" in r.stderr and "Traceback" not in r.stderr
    assert not home.tokenizer_path.exists()


def test_declining_says_how_to_go_on(tmp_path):
    home = Home(tmp_path)
    r = app(home, answers="maybe\n4\n3\n", timeout=60)  # no books: the bundled ones, a download, or your own
    assert r.returncode == 1
    assert r.stdout.count("Please answer with a number from 1 to 3.") == 2
    assert f"Put some .txt books into {home.data_dir}" in r.stdout
    assert not list(home.root.rglob("*.txt"))  # nothing was written or downloaded


def test_declining_the_tokenizer_says_how_to_go_on(tmp_path, book):
    home = Home(tmp_path)
    home.data_dir.mkdir()
    shutil.copy(book, home.data_dir)
    r = app(home, answers="n\n", timeout=60)
    assert r.returncode == 1
    assert "Train it with `hellogpt tokenizer train`, then run me again." in r.stdout
    assert not home.artifacts.exists()


def test_a_trained_model_with_a_lost_tokenizer_is_one_clear_error(home):
    home.tokenizer_path.unlink()
    r = app(home, "--model-name", "tiny", answers="Elizabeth\n")
    assert r.returncode == 2
    assert r.stderr.startswith("error: No tokenizer at") and "Traceback" not in r.stderr


def test_start_up_imports_nothing_it_does_not_need(home):
    """The way to the first prompt stays quick: no transformers, no plotting, no training code."""
    code = ("import sys; from hellogpt.cli import main; main(['--home', sys.argv[1], '--model-name', 'tiny']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'matplotlib') "
            "or m in ('hellogpt.training.trainer', 'hellogpt.data.tokens')))")
    r = subprocess.run([sys.executable, "-c", code, str(home.root)], input="", capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("Bye.\n[]")


# --- a pseudo-terminal -------------------------------------------------------------------------------------


def spawn(home: Home, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, [str(MAIN), "--home", str(home.root), *args], env=ENV,
                          encoding="utf-8", timeout=60, dimensions=(40, 160))
    return child


def test_prompt_loop_on_a_terminal(home):
    child = spawn(home, "--model-name", "tiny")
    child.expect_exact("> ")
    child.sendline("/temp 0")
    child.expect_exact("temperature: 0.0")
    child.sendline("/max 15")
    child.expect_exact("max new tokens: 15")
    child.sendline("Elizabeth")
    child.expect(r"\((\d+) tokens, \d+ tokens/s, seed \d+\)")
    first = child.before  # the prompt, then the continuation streamed after it
    assert "Elizabeth" in first

    child.sendline("\x1b[A")  # arrow up: the line history brings back "Elizabeth"
    child.expect(r"\((\d+) tokens, \d+ tokens/s, seed \d+\)")
    assert child.before.count("Elizabeth") >= 1

    child.sendline("/max 1000000")  # long enough to interrupt: Ctrl-C stops the generation only
    child.expect_exact("max new tokens: 1000000")
    child.sendline("It is a truth")
    child.expect(r"It is a truth\x1b\[0m[\s\S]{5}")  # the prompt in bold, and the continuation has begun
    child.sendintr()
    child.expect_exact("[stopped]")
    child.expect_exact("> ")
    child.sendintr()  # Ctrl-C at the prompt: a hint, not an exit
    child.expect_exact("(Ctrl-D, X or /quit exits.)")
    child.sendline("/info")
    child.expect_exact("max 1000000 tokens")
    child.sendeof()
    child.expect_exact("Bye.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# --- from an empty home to a streaming continuation ---------------------------------------------------------

TINY = ["--vocab-size", "300", "--max-seq-len", "32", "--d-model", "32", "--n-layers", "2", "--n-heads", "2",
        "--d-ffn", "64", "--batch-size", "8", "--max-steps", "30", "--eval-every", "15", "--warmup-steps", "5"]


@pytest.fixture
def mirror(tmp_path_factory):
    """A local Gutenberg mirror (cache/epub/<id>/pg<id>.txt) serving the first 25 KB of each of the eight
    books of the default download (the bundled two and made-up ones)."""
    books = {book_id: data[:25_000].decode("utf-8", "ignore").encode() for book_id, data in gutenberg_books().items()}
    with serve(write_mirror(tmp_path_factory.mktemp("mirror"), books)) as url:
        yield url


def test_new_user_through_piped_answers(tmp_path, mirror):
    """No books, no tokenizer, no model: the download (option 2), yes to the tokenizer and the training, then
    "Elizabeth"."""
    home = Home(tmp_path / "home")
    answers = "2\ny\ny\nElizabeth\n/temp 0\n/max 20\nElizabeth\nX\n"
    r = subprocess.run([sys.executable, str(MAIN), "--home", str(home.root), *TINY], input=answers,
                       capture_output=True, text=True, timeout=300, env={**ENV, "HELLOGPT_GUTENBERG_MIRROR": mirror})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert len(list(home.data_dir.glob("pg*.txt"))) == 8 and home.tokenizer_path.is_file()
    assert (home.model_dir("hellogpt") / "serial_1.pt").is_file()
    for insight in ("run length", "optimizer", "batch size", "learning rate", "dropout", "clipping threshold", "tokens",
                    "training samples", "validation samples"):
        assert insight in out
    assert "bits per byte" in out  # training reported its validation
    assert "Model 'hellogpt', serial 1" in out and "trained 30 steps" in out
    assert out.count("\nElizabeth") == 2  # two continuations, each streamed after its prompt
    assert "temperature: 0.0" in out and "max new tokens: 20" in out
    last = re.search(r"\((\d+) tokens, \d+ tokens/s, seed \d+\)\n> X", out)
    assert last and 1 <= int(last.group(1)) <= 20  # the second one used the new setting
    assert out.rstrip().endswith("Bye.")


@pytest.mark.smoke
def test_new_user_on_a_terminal(tmp_path):
    """Books copied into data/; the questions answered by typing; then a prompt, a setting, Ctrl-D."""
    home = Home(tmp_path / "home")
    home.data_dir.mkdir(parents=True)
    for book_id, size in ((1342, 60_000), (55, 40_000)):
        (home.data_dir / f"pg{book_id}.txt").write_text(bundled(book_id)[:size], encoding="utf-8")
    child = spawn(home, *TINY)
    child.expect_exact("Books: 2 in")
    child.expect_exact("Train the tokenizer now? [Y/n] ")
    child.sendline("y")
    child.expect_exact("training samples")
    child.expect_exact("Train 'hellogpt' now? (Ctrl-C stops and saves) [Y/n] ")
    child.sendline("")  # Enter: yes
    child.expect(r"step \d+/30")  # live progress
    child.expect_exact("Model 'hellogpt', serial 1", timeout=240)
    child.expect_exact("> ")
    child.sendline("Elizabeth")
    child.expect(r"\(\d+ tokens, \d+ tokens/s, seed \d+\)")
    assert "Elizabeth" in child.before
    child.sendline("/top-k 3")
    child.expect_exact("top-k: 3")
    child.sendeof()
    child.expect_exact("Bye.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_default_training_is_sized_for_this_machine(tmp_path, book, tokenizer_file):
    """No shape flags: the application times the sizes, says which it took, shows that model, trains it."""
    home = Home(tmp_path / "home")
    home.data_dir.mkdir(parents=True)
    shutil.copy(book, home.data_dir / book.name)
    home.tokenizer_dir.mkdir(parents=True)
    shutil.copy(tokenizer_file, home.tokenizer_path)
    r = app(home, "--time", "3", "--eval-every", "0", answers="y\nX\n")
    assert r.returncode == 0, r.stdout + r.stderr
    size = int(re.search(r"^Size (\d+) for this run: ", r.stdout, re.MULTILINE).group(1))
    assert r.stdout.index("Size ") < r.stdout.index("Training would use:")  # decided before it is shown
    assert f"parameters (size {size})" in r.stdout and f" size={size} " in r.stdout  # shown, then trained
    assert r.stdout.count("for this run: ") == 1  # timed once, not again by training
    from hellogpt.model.checkpoint import load_checkpoint

    assert load_checkpoint(home.model_dir("hellogpt") / "serial_1.pt")["config"]["size"] == size


# --- the bundled books, and a download that fails ------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.smoke
def test_yes_takes_the_bundled_books_without_a_network(tmp_path):
    """An empty home and --yes: the two bundled books (never a download: the mirror is a port nobody answers
    on), the tokenizer, five seconds of the smallest model, then "Elizabeth" at the prompt."""
    home = Home(tmp_path / "home")
    r = subprocess.run([sys.executable, "-m", "hellogpt", "--home", str(home.root), "--yes", "--time", "5",
                        "--size", "1"], input="Elizabeth\nX\n", capture_output=True, text=True, timeout=300,
                       env={**ENV, "HELLOGPT_GUTENBERG_MIRROR": closed_port_url()})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "Which books? [1] 1 (--yes)" in out and f"Books: 2 in {home.data_dir}." in out
    assert sorted(p.name for p in home.data_dir.iterdir()) == ["pg1342.txt", "pg55.txt"]
    for book_id in (1342, 55):
        assert (home.data_dir / f"pg{book_id}.txt").read_bytes() == bundled_text(book_id)
    for attempt in ("Books from", "Could not download", "download failed", "Downloaded"):
        assert attempt not in out + r.stderr  # it never tried the network
    assert "Train the tokenizer now? [Y/n] yes (--yes)" in out and home.tokenizer_path.is_file()
    assert "parameters (size 1)" in out and "Train 'hellogpt' now? (Ctrl-C stops and saves) [Y/n] yes (--yes)" in out
    assert (home.model_dir("hellogpt") / "serial_1.pt").is_file() and "bits per byte" in out
    assert "Model 'hellogpt', serial 1" in out
    continuation = re.search(r"^> Elizabeth\nElizabeth([\s\S]*?)\n\((\d+) tokens, \d+ tokens/s, seed \d+\)\n> X$", out,
                             re.MULTILINE)
    assert continuation and int(continuation.group(2)) >= 1  # the model wrote after the prompt
    assert out.rstrip().endswith("Bye.") and "Traceback" not in r.stderr


def test_a_failed_download_says_why_and_offers_the_books_again(tmp_path):
    """The download (option 2) from a mirror nobody answers at: the reason, the options again, and the bundled
    books (option 1) after all; the application goes on to the tokenizer (declined here: that ends it)."""
    home = Home(tmp_path / "home")
    offline = closed_port_url()
    r = subprocess.run([sys.executable, str(MAIN), "--home", str(home.root), "--mirror", offline],
                       input="2\n1\nn\n", capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert f"The download failed: Could not download {offline}/cache/epub/1342/pg1342.txt" in out
    assert "hellogpt data bundled" in out  # the message says what else there is
    assert "  2. try the download again" in out
    assert out.index("The download failed") < out.index("try the download again") < out.index("Books: 2 in")
    assert out.count("Which books?") == 2
    assert sorted(p.name for p in home.data_dir.iterdir()) == ["pg1342.txt", "pg55.txt"]  # no partial download
    assert (home.data_dir / "pg55.txt").read_bytes() == bundled_text(55)
    assert "Train the tokenizer now?" in out and "Train it with `hellogpt tokenizer train`" in out
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b"])
def test_a_model_name_that_is_not_one_folder_is_refused(tmp_path, name):
    """The application with a model name that would be a path: one paragraph that says what a name may hold,
    exit code 2, and nothing written anywhere (tests/cli/test_model_names.py: every command)."""
    home = Home(tmp_path / "home")
    outside = Path(name) if name.startswith("/") else None
    existed = outside is not None and outside.exists()
    r = subprocess.run([sys.executable, str(MAIN), "--home", str(home.root), "--yes", "--model-name", name],
                       input="", capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith(f"error: {name!r} cannot be a model name") and r.stderr.count("\n") == 1
    assert "Use letters, digits" in r.stderr
    assert list(tmp_path.iterdir()) == []  # not even the home
    assert existed or not outside or not outside.exists()
