"""``make gpu-check``: training, loss, FSDP and evaluation checks on a CUDA GPU (never run by CI)."""
