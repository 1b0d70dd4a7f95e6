"""Model lifecycle: declarative specs, training, evaluation and the catalog of models."""
