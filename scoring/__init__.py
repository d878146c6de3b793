"""Features, training, model loading and explanations."""
