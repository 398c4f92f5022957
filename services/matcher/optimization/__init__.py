"""Optimized batch matching: the benchmark instance format, the CP-SAT
model and its search, the baseline, the verifier, reports and match jobs."""
