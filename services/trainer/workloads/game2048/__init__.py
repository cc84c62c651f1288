"""2048 on torch: a vectorised game (env), an afterstate DQN (agent), and the "2048" and "2048-eval" workloads."""
