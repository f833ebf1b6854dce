"""``make gpu-check`` on a machine without CUDA: one line saying so, exit status 2, nothing written."""
from __future__ import annotations

import pytest
import torch

from experiments.gpu_check.run import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: run `make gpu-check` itself")
def test_without_cuda_it_says_so_in_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == ["gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was checked"]
    assert not (tmp_path / "out").exists()
