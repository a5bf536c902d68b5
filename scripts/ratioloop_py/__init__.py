"""Shared Python code for the ratioloop stage programs (scripts/*.py)."""
