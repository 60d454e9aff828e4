"""HelloGPT: a small GPT you train yourself on plain-text books."""

__version__ = "0.1.0"
