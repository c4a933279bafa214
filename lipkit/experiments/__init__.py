"""The seed's claims as runnable experiments (`lipkit reproduce`): one module per claim
(generalization: a, convergence: b, step_cost: c, many_classes: d, trap), shared types in
common.py, the claims' figures in plots.py, the orchestrator in reproduce.py and the REPORT.md
writer in report.py. Two measurements live apart from their claims: step_timing.py times one
WGAN critic step per Lipschitz method (claim c, `lipkit bench` and the step benchmarks), and
gradient_probes.py measures a critic's input-gradient norm on and off the data (claim d), and
trap_gradients.py the gradient a projected SN critic trains with against the reparametrized one."""
