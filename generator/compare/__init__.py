"""Comparing models: checkpoints of one architecture, or any two models, on one page (generator/compare/stage.py)."""
