"""Running an evaluation: on any accelerator through Lightning Fabric (one CPU or GPU, several processes
that share the rows, bf16), and resumably (its finished parts saved, :class:`Parts`).

The ``trainer`` config group of training (``conf/trainer/*.yaml``, Lightning ``Trainer`` arguments)
also selects where evaluation runs: :func:`fabric_from_trainer` builds a ``Fabric`` from its
``accelerator``, ``devices``, ``num_nodes``, ``precision`` and ``strategy`` (the other keys only
concern training). Fabric places the model (:func:`prepare_model`) and runs the forward passes under
its precision (``fabric.autocast``). With several processes (``trainer=ddp``, ``ddp_cpu``) each rank
predicts a disjoint share of every instruction's rows and the predictions are gathered on every rank
(:class:`ShardedPredictor`), so all ranks hold the same results; only rank 0 writes files and logs.

Resuming: the predictions of each (task, level) saved as soon as they are complete.

An evaluation writes ``<run dir>/parts/<task>.<level>.jsonl`` (the ``predictions.jsonl`` rows of that
task and level, written atomically) and ``parts/settings.json``: what the predictions depend on (the
model, adapter, prompt format, method, generation length, perturbation mode and the
:func:`~coin_lightning.eval.scoring.metrics.fingerprint` of the rows and instructions). Rerun in the same
directory (``hydra.run.dir=<run dir>``) with the same settings, it reads the finished parts instead of
predicting them again; with other settings it refuses, naming the first setting that differs. Batch
sizes, the prefix cache and the ``trainer`` (devices, processes) are not part of the key: they do not
change the predictions.
"""
from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from coin_lightning.config_types import plain
from coin_lightning.errors import EvalConfigError
from coin_lightning.eval.engine.predict import Prediction, Predictor, assemble
from coin_lightning.io import write_json, write_jsonl
from coin_lightning.model.loading import first_line

FABRIC_KEYS = ("accelerator", "devices", "num_nodes", "precision", "strategy")
"""The ``trainer`` keys evaluation reads; every other key configures training only."""

_GPU = ("gpu", "cuda")


def trainer_fields(node: Any) -> dict:
    """The :data:`FABRIC_KEYS` of a ``trainer`` mapping, as plain values, absent keys left out."""
    return {key: plain(node[key]) for key in FABRIC_KEYS if node and node.get(key) is not None}


def fabric_strategy(spec: Any, accelerator: str) -> Any:
    """A Fabric strategy for the ``trainer.strategy`` value: a name is passed on; a node whose
    ``_target_`` is a DDP or FSDP strategy (Lightning's ``DDPStrategy`` / ``FSDPStrategy`` or a factory
    of one) becomes Fabric's ``DDPStrategy`` with the same process-group backend. Evaluation holds no gradients, so FSDP's sharding buys nothing there: each GPU holds the
    whole model (a 7B model in bf16 fits one) and predicts its share of the rows, as with DDP."""
    if spec is None or isinstance(spec, str):
        return spec or "auto"
    target = str(spec.get("_target_", ""))
    name = target.rsplit(".", 1)[-1].lower()
    if "ddp" not in name and "fsdp" not in name:
        raise EvalConfigError(f"trainer.strategy._target_={target!r}: evaluation runs with a DDP or FSDP strategy "
                              "(rows shared by the processes) or a strategy name")
    from lightning.fabric.strategies import DDPStrategy

    backend = spec.get("process_group_backend") or ("nccl" if accelerator in _GPU else "gloo")
    return DDPStrategy(process_group_backend=backend)


def fabric_from_trainer(node: Any):
    """A ``lightning.fabric.Fabric`` for the ``trainer`` config node (not launched yet).

    Raises:
        EvalConfigError: a GPU accelerator on a machine without CUDA, bf16/fp16 on a CPU, an unknown
            strategy, or arguments Fabric refuses (one line naming the ``trainer`` key).
    """
    from lightning.fabric import Fabric
    from lightning.fabric.accelerators import CUDAAccelerator

    f = trainer_fields(node)
    accelerator = str(f.get("accelerator", "cpu"))
    precision = str(f.get("precision", "32-true"))
    if accelerator in _GPU and not CUDAAccelerator.is_available():
        raise EvalConfigError(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU "
                              "(torch.cuda.is_available() is False); use trainer=cpu or trainer=ddp_cpu")
    if accelerator == "cpu" and not precision.startswith(("32", "64")):
        raise EvalConfigError(f"trainer.precision={precision}: CPU evaluation runs in fp32 (32-true); "
                              "bf16/fp16 are for GPUs")
    try:
        return Fabric(accelerator=accelerator, devices=f.get("devices", 1), num_nodes=int(f.get("num_nodes", 1)),
                      precision=precision, strategy=fabric_strategy(f.get("strategy"), accelerator))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise EvalConfigError(f"trainer ({', '.join(f'{k}={v}' for k, v in f.items() if k != 'strategy')}): {first_line(exc)}") from None


def check_not_multirun(fabric) -> None:
    """Refuse local multi-process evaluation inside a Hydra multirun: Lightning starts the extra ranks
    by re-running the command line, which would restart the whole sweep (as for training,
    :func:`coin_lightning.training.checks.check_launch`).

    Raises:
        EvalConfigError: Hydra runs in MULTIRUN mode and Fabric would start processes itself.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    env = getattr(fabric.strategy, "cluster_environment", None)
    if fabric.world_size > 1 and env is not None and not env.creates_processes_externally:
        raise EvalConfigError(f"trainer.devices: {fabric.world_size} local processes cannot run inside a Hydra multirun "
                              "(the extra ranks re-run the command); run each job without -m, or under SLURM")


def prepare_model(fabric, model):
    """Put ``model`` on Fabric's device in its precision (``bf16-true`` casts the weights; mixed
    precision runs the forward passes under ``fabric.autocast()``). No DDP wrapper: evaluation has no
    gradients. Quantized (bitsandbytes) models stay where transformers placed them."""
    model = fabric.strategy.precision.convert_module(model)
    if not getattr(model, "is_quantized", False):
        model = fabric.to_device(model)
    return model.eval()


class ProcessesLost(RuntimeError):
    """A collective failed because another process of the evaluation stopped (interrupted or crashed)."""


class ShardedPredictor:
    """A :class:`~coin_lightning.eval.engine.predict.Predictor` whose rows are shared by Fabric's processes.

    Rank ``r`` of ``W`` predicts the length-sorted batches ``r, r + W, ...`` of each instruction's rows
    (the same batches, prefix cache and decoding groups as one process would run), then the
    predictions are gathered on every rank (``torch.distributed.all_gather_object``; a failed gather
    raises :class:`ProcessesLost`). Every rank must call the methods in the same order with the same
    arguments. With one process it is the
    predictor itself, under ``fabric.autocast()``.
    """

    def __init__(self, fabric, predictor: Predictor):
        self.fabric = fabric
        self.predictor = predictor
        self.shard = (fabric.global_rank, fabric.world_size)

    def _gather(self, local: Any) -> list[Any]:
        if self.fabric.world_size == 1:
            return [local]
        out: list[Any] = [None] * self.fabric.world_size
        try:
            torch.distributed.all_gather_object(out, local)
        except RuntimeError as exc:  # gloo: "Connection closed by peer"; NCCL: DistBackendError
            raise ProcessesLost(f"rank {self.fabric.global_rank} lost another process of the evaluation ({first_line(exc)[:160]})") from None
        return out

    def predict(self, instruction: str, contents: Sequence[str], label_words: Sequence[str]) -> list[Prediction]:
        """As :meth:`Predictor.predict`: ``N`` predictions in the order of ``contents``, on every rank."""
        with self.fabric.autocast():
            mine = self.predictor.predict(instruction, contents, label_words, shard=self.shard)
        local = {i: p for i, p in enumerate(mine) if p is not None}
        merged = {i: p for part in self._gather(local) for i, p in part.items()}
        return [merged[i] for i in range(len(contents))]

    def last_hidden(self, instruction: str, contents: Sequence[str], responses: Sequence[str] | None = None,
                    pooling: str = "last_prompt", eos: bool = False) -> torch.Tensor:
        """As :meth:`Predictor.last_hidden`: Float ``[N, H]`` (CPU) in ``contents`` order, on every rank."""
        with self.fabric.autocast():
            local = list(self.predictor.hidden_rows(instruction, contents, self.shard, responses, pooling, eos))
        return assemble([p for part in self._gather(local) for p in part], len(contents))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (sent by SLURM and ``kill``) raises ``KeyboardInterrupt`` as Ctrl-C
    does (Python's ``signal.default_int_handler``), so both stop an evaluation the same way; the previous
    handler is restored afterwards."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


PARTS_DIR = "parts"
"""Folder of the finished parts inside a run directory."""
SETTINGS_FILE = "settings.json"
"""The key of the parts (inside :data:`PARTS_DIR`)."""


def part_key(settings: Any, fingerprint: dict, meta: dict) -> dict:
    """The settings the predictions of a run depend on (JSON-able).

    Args:
        settings: the :class:`~coin_lightning.eval.settings.EvalSettings`.
        fingerprint: :func:`~coin_lightning.eval.scoring.metrics.fingerprint` of the rows and given instructions.
        meta: ``model``, ``adapter`` and ``prompt_format`` of the run.
    """
    key = {k: meta.get(k) for k in ("model", "adapter", "prompt_format")}
    key.update(method=settings.method, max_new_tokens=settings.max_new_tokens, perturb_mode=settings.perturb_mode,
               query_budget=settings.query_budget if settings.perturb_mode == "adversarial" else None,
               rows=fingerprint["rows"], instructions=fingerprint["instructions"])
    return json.loads(json.dumps(key, default=str))


class Parts:
    """The finished (task, level) parts of one run directory.

    Args:
        run_dir: the evaluation's output directory.
        key: :func:`part_key` of this run.
        write: whether this process writes parts (rank 0 only).
    """

    def __init__(self, run_dir: str | Path, key: dict, write: bool = True):
        self.dir = Path(run_dir) / PARTS_DIR
        self.key = key
        self.write = write

    def check(self) -> None:
        """Refuse to resume from parts written with other settings (before any model loads).

        Raises:
            EvalConfigError: ``parts/settings.json`` is unreadable or differs from this run's key.
        """
        path = self.dir / SETTINGS_FILE
        if not path.is_file():
            return
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvalConfigError(f"{path}: unreadable ({exc}); delete {self.dir} to evaluate from scratch") from None
        for k in sorted(set(saved) | set(self.key)):
            if saved.get(k) != self.key.get(k):
                raise EvalConfigError(f"{self.dir} holds predictions made with another {k} ({saved.get(k)!r}, now "
                                      f"{self.key.get(k)!r}): rerun with the same settings to resume, or use another "
                                      "output directory")

    def finished(self) -> dict[tuple[str, str], list[dict]]:
        """``{(task, level): rows}`` of every saved part (empty when nothing was saved).

        Raises:
            EvalConfigError: a part file that cannot be read back.
        """
        if not (self.dir / SETTINGS_FILE).is_file():
            return {}
        out = {}
        for path in sorted(self.dir.glob("*.jsonl")):
            task, _, level = path.stem.rpartition(".")
            try:
                out[(task, level)] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            except (OSError, ValueError) as exc:
                raise EvalConfigError(f"{path}: unreadable part ({exc}); delete it to predict it again") from None
        return out

    def save(self, task: str, level: str, rows: list[dict]) -> None:
        """Write one finished part (and the key, with the first part); no-op on processes that do not write."""
        if not self.write:
            return
        if not (self.dir / SETTINGS_FILE).is_file():
            write_json(self.dir / SETTINGS_FILE, self.key)
        write_jsonl(self.dir / f"{task}.{level}.jsonl", rows)
