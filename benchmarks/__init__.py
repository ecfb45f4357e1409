"""Benchmarks for slipcore-notebooks: quality curve, token economics, speed (``make bench``)."""
