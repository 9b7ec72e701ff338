"""Checkpoint formats: each reader turns one kind of file into Meta-named tensor views (see checkpoint.py)."""
