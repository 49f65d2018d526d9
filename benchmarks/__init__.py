"""The maintained benchmarks: run each from the project root as ``.venv/bin/python -m benchmarks.NAME``."""
