"""Package data: scenario YAMLs, hardware catalog, model cards, agent hyperparameters."""
