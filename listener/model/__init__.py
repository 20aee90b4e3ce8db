"""Window audio -> class probabilities: frontend, network, checkpoints, scorer."""
