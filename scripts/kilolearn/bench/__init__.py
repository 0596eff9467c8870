"""Benchmarks (not imported by the library): instructions per sample on every board
(kbench), planner measurements (planbench), selective updates (sparsebench), flash
wear (storebench)."""
