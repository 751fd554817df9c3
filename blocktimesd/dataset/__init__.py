"""The dataset under DATA_DIR: what a row is, where it lives, how it is written, read
and repaired."""
