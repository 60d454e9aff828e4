"""Inspection: one forward pass over a prompt, read five ways, and a report folder of figures."""
