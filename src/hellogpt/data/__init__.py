"""Books in: finding and cleaning them, the bundled ones, Project Gutenberg, the tokenizer, the token cache."""
