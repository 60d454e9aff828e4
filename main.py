"""HelloGPT's entry point: `python main.py` starts the guided console application.

The same as `hellogpt` or `python -m hellogpt`; every command of `hellogpt --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # run from a checkout without installing

from hellogpt.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
