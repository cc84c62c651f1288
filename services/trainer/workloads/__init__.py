"""Built-in workloads: the 2048 trainer and evaluator (need torch) and the basic test workloads (do not)."""
