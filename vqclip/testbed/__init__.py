"""Spelling testbed: a synthetic world where a small CLIP learns to read, and learn / forget pull it apart."""
