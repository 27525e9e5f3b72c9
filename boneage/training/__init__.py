"""Training the network: the loop, batches, splits, multi-process training and the decoded-image cache."""
