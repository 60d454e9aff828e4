"""Training: the run (setup, loop, finish), its schedule, optimizers, evaluation and size choice."""
