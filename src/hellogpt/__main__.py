"""`python -m hellogpt` starts the same application as `hellogpt` and `python main.py`."""

from hellogpt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
