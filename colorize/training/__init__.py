"""Models and training: the networks, the engine, checkpoints, the ab priors, the data loader."""
