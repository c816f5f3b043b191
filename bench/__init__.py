"""Reproducible benchmarks of ollama-keepwarm against the usual keep-warm recipes.

Everything runs against the fake Ollama on a compressed clock; ``python -m bench.run`` is the
one command (see ``bench/run.py``).
"""
