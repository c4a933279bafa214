"""The seed's claims as runnable experiments (`lipkit reproduce`): one module per claim
(generalization: a, convergence: b, step_cost: c, many_classes: d, trap), shared types in
common.py, the orchestrator in reproduce.py and the REPORT.md writer in report.py."""
