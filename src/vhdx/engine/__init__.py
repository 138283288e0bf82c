"""Layer 3: the block I/O engine. Below the public API only ``source.py`` touches a file."""
