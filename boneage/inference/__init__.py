"""Reading a film end to end: the predictor, the whole assessment of a case, the check against the training data."""
