"""Layer 2: the typed file model. Decodes, validates and encodes structures; no file handles."""
