"""Baselines for the accuracy benchmark: an ilastik-style random forest and U-Nets trained on sparse clicks."""
