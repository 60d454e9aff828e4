"""The application layer: the guided console, the commands, and everything a person sees (rich, input, print)."""
