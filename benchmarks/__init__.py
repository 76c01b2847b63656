"""Benchmarks of epsseg-monai (speed, memory, accuracy); run from the repository root."""
