"""Questions on standard input: yes/no, or one of numbered options.

Enter takes the default, so answers can be piped in (`printf 'y\\n' | python main.py`); `--yes`
answers every question with its default. When input ends while a question waits, the application
stops and names that flag, rather than guessing or asking again.
"""

from __future__ import annotations

import sys

from hellogpt.core.errors import UserError


class Declined(Exception):
    """The user said no to a step the application needs; the message says how to do it by hand."""


def ask(question: str, assume_yes: bool) -> bool:
    """A yes/no question on standard input (Enter means yes). End of input stops the application."""
    if assume_yes:
        print(f"{question} [Y/n] yes (--yes)")
        return True
    while True:
        answer = _read_answer(f"{question} [Y/n] ", question).strip().lower()
        if answer in ("", "y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
        print("Please answer y (yes) or n (no).")


def choose(question: str, options: list[str], assume_first: bool) -> int:
    """One of numbered options (Enter takes the first); its index."""
    for number, option in enumerate(options, start=1):
        print(f"  {number}. {option}")
    if assume_first:
        print(f"{question} [1] 1 (--yes)")
        return 0
    while True:
        answer = _read_answer(f"{question} [1] ", question).strip()
        if answer == "":
            return 0
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            return int(answer) - 1
        print(f"Please answer with a number from 1 to {len(options)}.")


def _read_answer(prompt: str, question: str) -> str:
    try:
        answer = input(prompt)
    except EOFError:
        print()
        raise UserError(f"Input ended while asking \"{question}\", so nothing was done. Answer the questions "
                        "on a terminal, pipe the answers in, or run again with --yes to answer yes to every "
                        "question.", exit_code=1)
    if not sys.stdin.isatty():
        print(answer)  # a piped answer is not echoed by a terminal: show it
    return answer
