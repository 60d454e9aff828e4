"""Generation: sampling and the KV-cached decode loop that continues a prompt."""
