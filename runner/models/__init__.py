"""Graph builders, one module per model architecture."""
