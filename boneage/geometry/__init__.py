"""Where the hand is and how the film lies: framing, hand mask, polarity, laterality, preparation, perturbations."""
