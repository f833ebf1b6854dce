"""``coin-download`` (or ``python -m coin_lightning.download``): fetch everything a config needs from the Hugging Face hub.

Compute nodes often have no internet access. Run this once on a login node with the same config
overrides as the job; it composes the config (``train`` by default, ``--config-name eval`` for
evaluation), downloads the hub model (with its tokenizer) at ``model.revision`` into
``model.cache_dir``, the starting adapter at ``model.adapter_revision``, and the hub datasets the
data source reads (GLUE ``nyu-mll/glue`` configs, the FLAN collection), then prints the environment
variables that make the job run offline. Local paths, the embedded model and ``tiny:llama`` need
nothing and are skipped.

Examples::

    coin-download experiment=coin_alpaca data=glue
    coin-download --config-name eval model=alpaca adapter=outputs/.../adapter
    coin-download --dry-run model=alpaca data=glue   # list, fetch nothing
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coin_lightning.commands import examples, quiet_third_party
from coin_lightning.conf import CONFIG_DIR
from coin_lightning.config_types import plain
from coin_lightning.data.sources import SOURCES, eval_tasks
from coin_lightning.errors import reported, take_verbose_flag
from coin_lightning.eval.settings import task_groups
from coin_lightning.model.config import EMBEDDED, TINY

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
"""Set on compute nodes: transformers, peft and datasets then read only the local caches."""

CACHE_ENV = ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE")
"""Cache locations that must be the same (a shared filesystem) on the download and compute nodes."""

IGNORED_WEIGHTS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "flax_model*", "tf_model*", "rust_model*"]
"""Non-PyTorch weight files skipped in model snapshots (TensorFlow, Flax, ONNX, Rust)."""


@dataclass(frozen=True)
class Download:
    """One item to fetch from the hub."""

    what: str
    """What the run uses it for: ``model`` (weights + tokenizer), ``adapter`` or ``dataset``."""
    repo_id: str
    """Hub repository id, e.g. ``yahma/llama-7b-hf`` or ``nyu-mll/glue``."""
    revision: str | None
    """Branch, tag or commit; ``None`` = the default branch."""
    repo_type: str
    """``model`` or ``dataset``."""
    config: str | None = None
    """Dataset configuration (a GLUE task such as ``rte``); ``None`` for models."""
    cache_dir: str | None = None
    """Hub cache directory (``model.cache_dir``); ``None`` = ``$HF_HUB_CACHE``."""
    data_files: Any = None
    """``datasets.load_dataset`` ``data_files`` (FLAN: only some task files)."""

    def describe(self) -> str:
        """One line: ``model yahma/llama-7b-hf@main``, ``dataset nyu-mll/glue:rte``."""
        name = self.repo_id + (f":{self.config}" if self.config else "") + (f"@{self.revision}" if self.revision else "")
        return f"{self.what:8s} {name}" + (f" (cache_dir={self.cache_dir})" if self.cache_dir else "")


def _is_hub_id(value: str | None) -> bool:
    """A hub id (``org/name``) rather than a local path, the embedded model or ``tiny:llama``."""
    if not value or value in (EMBEDDED, TINY) or Path(value).expanduser().exists():
        return False
    return not value.startswith(("/", ".", "~")) and value.count("/") == 1


def plan(cfg: Any) -> list[Download]:
    """The hub downloads a composed ``train`` or ``eval`` config needs, in order, without duplicates.

    Args:
        cfg: the composed config (``model``, ``data`` and, for evaluation, ``eval`` and ``adapter``).

    Returns:
        ``Download`` items: the model repository (weights and tokenizer) at ``model.revision``, the
        adapter at ``model.adapter_revision``, an evaluated hub adapter (``adapter``), and unless
        ``data.root`` is set the hub datasets of the data source (``Source.hub_data``: one GLUE config
        of ``nyu-mll/glue`` per task, the FLAN collection) and of the evaluation tasks (their
        ``EvalSpec.hub``). Local paths, ``embedded:smollm2-135m`` and ``tiny:llama`` give no item.
    """
    model = cfg.get("model") or {}
    cache = model.get("cache_dir")
    repos = [("model", model.get("name_or_path"), model.get("revision")),
             ("adapter", model.get("adapter"), model.get("adapter_revision")), ("adapter", cfg.get("adapter"), None)]
    items = [Download(what, repo, revision, "model", cache_dir=cache) for what, repo, revision in repos if _is_hub_id(repo)]
    data = cfg.get("data") or {}
    if data.get("root") is None:
        source = SOURCES.get(data.get("source"))
        hub = source.hub_data(data.get("tasks"), data.get("hub_id"), plain(data.get("data_files"))) if source else []
        known, groups = eval_tasks(), task_groups()
        for task in (cfg.get("eval") or {}).get("tasks") or []:
            hub += [(*known[n][1].hub, None) for n in groups.get(task, (task,)) if n in known and known[n][1].hub]
        items += [Download("dataset", h, None, "dataset", config=c, data_files=f) for h, c, f in hub]
    unique: dict[tuple, Download] = {}
    for item in items:
        unique.setdefault((item.repo_id, item.revision, item.config), item)  # the first of each key
    return list(unique.values())


def fetch(item: Download) -> str:
    """Download one item into the local caches; returns where it is (a directory or a dataset summary).

    Models and adapters: ``huggingface_hub.snapshot_download`` (non-PyTorch weight formats skipped).
    Datasets: ``datasets.load_dataset`` of every split, so the prepared Arrow cache that the run reads
    offline exists, not only the raw files.

    Raises:
        whatever the hub client raises (no network, unknown repository or revision, gated model).
    """
    if item.repo_type == "model":
        from huggingface_hub import snapshot_download

        return snapshot_download(
            item.repo_id, revision=item.revision, repo_type="model", cache_dir=item.cache_dir, ignore_patterns=IGNORED_WEIGHTS
        )
    import datasets

    kwargs = {"revision": item.revision} if item.revision else {}
    splits = datasets.load_dataset(item.repo_id, item.config, data_files=item.data_files, **kwargs)
    return ", ".join(f"{name}: {len(split)} rows" for name, split in splits.items())


def run(cfg: Any, dry_run: bool = False, fetcher: Callable[[Download], str] = fetch, out=None) -> int:
    """Fetch (or with ``dry_run`` only list) every item of :func:`plan`; print what happened.

    Returns:
        The exit status: 0 when every item was fetched (or listed), 1 when any failed (each failure
        is one line naming the item).
    """
    out = out or sys.stdout
    err = sys.stderr if out is sys.stdout else out
    items = plan(cfg)
    if not items:
        print("Nothing to download: the config uses only local or embedded models and data.", file=out)
        return 0
    failed = 0
    for item in items:
        if dry_run:
            print(f"would fetch {item.describe()}", file=out)
            continue
        try:
            where = fetcher(item)
        except Exception as exc:  # noqa: BLE001 - report each item's failure in one line and go on
            failed += 1
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {item.describe()}: {first}", file=err)
            continue
        print(f"fetched {item.describe()} -> {where}", file=out)
    if not dry_run and not failed:  # how to run the job offline on compute nodes (env vars to export, caches to share)
        exports = {**OFFLINE_ENV, **{k: os.environ[k] for k in CACHE_ENV if os.environ.get(k)}}
        print("On the compute nodes, with the same cache directories as here (a shared filesystem):", file=out)
        print("  export " + " ".join(f"{k}={v}" for k, v in exports.items()), file=out)
    return 1 if failed else 0


def compose_config(config_name: str, overrides: list[str]):
    """Compose ``conf/<config_name>.yaml`` with command-line overrides (no output directory is created)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name, overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``[--config-name train|eval] [--dry-run] [hydra overrides ...]``."""
    ap = argparse.ArgumentParser(
        prog="coin-download", description=examples(__doc__, "coin-download"), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-name", default="train", help="train (default) or eval")
    ap.add_argument("--dry-run", action="store_true", help="list the downloads without fetching")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job (model=alpaca data=glue ...)")
    quiet_third_party()
    args = ap.parse_args(take_verbose_flag(sys.argv[1:] if argv is None else list(argv)))
    with reported(status=2):
        cfg = compose_config(args.config_name, args.overrides)
    return run(cfg, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
