"""SplitInference-v0."""
