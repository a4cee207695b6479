"""Benchmarks: scripts run as `python bench/NAME.py` (each puts the repository on sys.path first), whose
results the README's Benchmarks table quotes. They import each other as `bench.NAME`, so the import
contracts in .importlinter see, and keep acyclic, the arrows between them."""
