"""Why to trust a reading: explanations and their audit, heatmap rendering, atlas, error analysis, fairness, precision."""
