"""``make gpu-check`` (one CUDA GPU, no installation, offline) and ``make gpu-check-dry`` (the same steps on the CPU)."""
