"""The model: the GPT itself, its fused loss, checkpoints, and the GPT-2 format."""
