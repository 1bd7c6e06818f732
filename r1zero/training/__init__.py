"""The training loop and what it needs: log-prob passes, the shared update loop, optimizer and schedule,
checkpoints, run-health guards and torchrun support."""
