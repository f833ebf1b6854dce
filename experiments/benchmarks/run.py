"""``make bench`` / ``python -m experiments.benchmarks.run [options]``: training-step and evaluation
throughput of coin-lightning, measured side by side in one process.

Writes ``<output>/bench.json`` (every figure, the machine, versions, shapes, raw times) and
``<output>/bench.md`` (the tables, also printed), atomically. See ``docs/PERFORMANCE.md`` for what
each figure means and the targets it is compared with. Examples::

    make bench                                   # defaults: embedded SmolLM2-135M, CPU fp32
    make bench ARGS="--repeats 5 --warmup 2"
    python -m experiments.benchmarks.run --device cuda --grad-ckpt --compile   # GPU path (bf16)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from experiments.benchmarks import batches as batches_mod
from experiments.benchmarks.flops import DecoderShape, LoraShape, batch_flops
from experiments.benchmarks.machine import choose_threads, machine_info, matmul_unit
from experiments.benchmarks.report import TARGETS, render_markdown
from experiments.benchmarks.steps import (
    compiled_decoder,
    make_step,
    padded_rows,
    reference_loss,
    torch_lora_dropout,
)
from experiments.benchmarks.timing import (
    median,
    paired_ratio,
    parameter_storages,
    peak_memory,
    pick_clock,
    time_interleaved,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "experiments" / "benchmarks" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them with defaults)."""
    p = argparse.ArgumentParser(prog="python -m experiments.benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="smollm2_135m", help="conf/model/<name>.yaml or a path to such a YAML file")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto = fp32 on CPU, bf16 mixed precision (autocast) on CUDA")
    p.add_argument("--threads", default="auto", help="torch threads: a number, or auto (see machine.choose_threads)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per training variant (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds per variant before timing")
    p.add_argument("--clock", default="auto", choices=["auto", "wall", "cpu"],
                   help="clock of the figures: auto = process CPU time on one CPU thread, else wall-clock")
    p.add_argument("--batch-pairs", type=int, default=4, help="pairs per micro-batch (rows = 2 x pairs)")
    p.add_argument("--seq-len", type=int, default=128, help="target padded width of the timed batches")
    p.add_argument("--batches", type=int, default=1, help="distinct real batches per timed round")
    p.add_argument("--data", default="auto", choices=["auto", "glue", "embedded"],
                   help="auto = GLUE from --data-root when present, else the embedded synthetic tasks")
    p.add_argument("--data-root", type=Path, default=batches_mod.DEFAULT_DATA_ROOT, help="the shared data pack")
    p.add_argument("--tasks", nargs="*", default=None, help="restrict the training data's tasks")
    p.add_argument("--lambda", dest="lambda_", type=float, default=1000.0, help="CoIN contrastive weight")
    p.add_argument("--temperature", type=float, default=0.05, help="InfoNCE temperature")
    p.add_argument("--lora-dropout", type=float, default=None, help="override model.lora.dropout (paper 0.05)")
    p.add_argument("--no-ablations", action="store_true",
                   help="skip timing the CoIN step on padded rows and with peft's nn.Dropout (the ablations)")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    p.add_argument("--no-packing", action="store_true", help="model.packed_sequences=false (padded rows)")
    p.add_argument("--no-cpu-speedups", action="store_true",
                   help="model.cpu_speedups=false (peft's nn.Dropout; packed rows only with flash/flex attention)")
    p.add_argument("--grad-ckpt", action="store_true", help="non-reentrant gradient checkpointing (peft-compatible)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder for the training steps")
    p.add_argument("--matmul-size", type=int, default=2048, help="square matrix size of the matmul peak")
    p.add_argument("--skip-eval", action="store_true", help="skip the evaluation-throughput section")
    p.add_argument("--eval-task", default=None, help="evaluation task (default sst2, or embedded_parity)")
    p.add_argument("--eval-rows", type=int, default=64, help="rows of the evaluation task")
    p.add_argument("--eval-batch-size", type=int, default=16, help="rows per forward pass in evaluation")
    p.add_argument("--eval-decode-batch-size", type=int, default=64,
                   help="generate: rows decoded together (eval.decode_batch_size)")
    p.add_argument("--eval-repeats", type=int, default=5, help="timed rounds per evaluation variant")
    p.add_argument("--seed", type=int, default=0, help="seeds LoRA init, dropout, data order and row samples")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="directory of bench.json and bench.md")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    bad = args.repeats < 1 or args.eval_repeats < 1 or args.warmup < 0 or args.batches < 1
    if bad or args.batch_pairs < 2 or args.batch_pairs % 2:
        p.error("--repeats >= 1, --warmup >= 0, --batches >= 1 and an even --batch-pairs >= 2 are required")
    return args


def _quiet() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def model_config(args: argparse.Namespace) -> dict:
    """The ``model`` config node from ``conf/model/<name>.yaml`` with the benchmark's overrides.

    Raises:
        FileNotFoundError: no such config.
    """
    from coin_lightning.model.config import ModelArgs, read_model_file

    path = Path(args.model)
    if not path.suffix:
        from coin_lightning.conf import CONFIG_DIR

        path = Path(CONFIG_DIR) / "model" / f"{args.model}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--model {args.model}: {path} does not exist")
    cfg = read_model_file(path)
    cfg["attn_implementation"] = args.attn
    cfg["gradient_checkpointing"] = bool(args.grad_ckpt)
    cfg["packed_sequences"] = ModelArgs.from_config(cfg).packed_sequences and args.attn == "sdpa" and not args.no_packing
    if args.no_cpu_speedups:
        cfg["cpu_speedups"] = False
    if args.lora_dropout is not None:
        cfg.setdefault("lora", {})["dropout"] = args.lora_dropout
    return cfg


def _log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).log(msg)


def train_section(args, model, batches, shape, lora, device, precision: str, clock: str) -> dict[str, Any]:
    """Time the training-step variants and the matmul peak interleaved; memory, FLOPs and ratios.

    Variants: ``coin`` (lambda = ``--lambda``), ``cit`` (lambda = 0), ``reference`` (reference-style
    step on padded rows with peft's ``nn.Dropout`` and peft's and transformers' own layers, as the
    reference code) and two ablations of the CoIN step: ``coin_padded`` (packing off, when the model
    packs rows) and ``coin_torch_dropout`` (peft's ``nn.Dropout``, when
    :class:`~coin_lightning.speedups.dropout.LoraDropout` is in use); all share one AdamW optimizer.
    """
    from coin_lightning.model import packing
    from coin_lightning.model.module import CoinModule
    from coin_lightning.speedups.dropout import LoraDropout

    coin = CoinModule(model, {"lambda": args.lambda_, "temperature": args.temperature})
    cit = CoinModule(model, {"lambda": 0.0, "temperature": args.temperature})
    coin.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    reference = make_step(lambda b: reference_loss(model, b, args.lambda_, args.temperature), optimizer, device,
                          precision)

    def reference_step(b):  # the reference code: padded batches, peft's own nn.Dropout
        with torch_lora_dropout(model), padded_rows(model):
            return reference(b)

    coin_step = make_step(lambda b: coin.compute(b).loss, optimizer, device, precision)
    steps = {
        "coin": coin_step,
        "cit": make_step(lambda b: cit.compute(b).loss, optimizer, device, precision),
        "reference": reference_step,
    }
    packed = packing.packing_mode(model.get_base_model()) is not None
    if packed and not args.no_ablations:
        def coin_padded(b):
            with padded_rows(model):
                return coin_step(b)

        steps["coin_padded"] = coin_padded
    if any(isinstance(m, LoraDropout) and m.p > 0 for m in model.modules()) and not args.no_ablations:
        def coin_torch_dropout(b):
            with torch_lora_dropout(model):
                return coin_step(b)

        steps["coin_torch_dropout"] = coin_torch_dropout
    mm_fn, mm_flops = matmul_unit(device, torch.bfloat16 if precision == "bf16" else torch.float32, args.matmul_size)
    fns = {name: (lambda s=s: [s(b) for b in batches]) for name, s in steps.items()}
    # the matmul unit runs right after (or, in reversed rounds, right before) the CoIN step it is paired with
    fns = {"coin": fns.pop("coin"), "matmul": mm_fn, **fns}
    _log(f"timing {', '.join(fns)}: {args.warmup} warm-up + {args.repeats} interleaved round(s) of "
         f"{len(batches)} step(s)")
    t0 = time.perf_counter()
    clocks = time_interleaved(fns, args.repeats, args.warmup, device)
    seconds = time.perf_counter() - t0
    times = clocks[clock]

    exclude = parameter_storages(model)
    memory = {name: peak_memory(lambda s=steps[name]: s(batches[0]), device, exclude) for name in steps}
    n_steps = len(batches)
    contrastive = args.lambda_ > 0

    def per_step(fn) -> float:
        return sum(fn(b) for b in batches) / n_steps

    useful = [batch_flops(b, shape, lora, "useful", contrastive=contrastive) for b in batches]
    useful_coin = sum(f.total for f in useful) / n_steps
    useful_plain = per_step(lambda b: batch_flops(b, shape, lora, "useful", contrastive=False).total)
    # the packed attention kernel runs on CPU in fp32 eager mode (else SDPA on dense [L, L] rows)
    kernel = (packing.is_enabled(model.get_base_model()) and device.type == "cpu" and precision == "fp32"
              and not args.compile)
    computed = {
        "coin": per_step(lambda b: batch_flops(b, shape, lora, "computed", contrastive, packed=packed,
                                               kernel=kernel).total),
        "cit": per_step(lambda b: batch_flops(b, shape, lora, "computed", False, packed=packed, kernel=kernel).total),
        "reference": per_step(lambda b: batch_flops(b, shape, lora, "computed", False, full_logits=True).total),
        "coin_padded": per_step(lambda b: batch_flops(b, shape, lora, "computed", contrastive).total),
    }
    computed["coin_torch_dropout"] = computed["coin"]
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    rows = sum(int(b["input_ids"].shape[0]) for b in batches)

    peak_rates = [mm_flops / t for t in times["matmul"]]
    peak = max(peak_rates)  # a peak is what the hardware reaches; contention only lowers it

    def fraction(name: str) -> float:
        """Median over rounds of (useful FLOP/s of the round's step) / (matmul rate of the same round)."""
        return median([useful_coin * n_steps / t / rate for t, rate in zip(times[name], peak_rates)])

    def fraction_best_peak(name: str) -> float:  # the conservative variant: median step time vs best round
        return useful_coin * n_steps / median(times[name]) / peak

    variants = {}
    for name in fns:
        if name == "matmul":
            continue
        key = "coin" if name.startswith("coin") else name
        step_s = median(times[name]) / n_steps
        variants[name] = {
            "step_s": step_s,
            "tokens_per_s": real_tokens / median(times[name]),
            "rows_per_s": rows / median(times[name]),
            "useful_gflop_per_step": (useful_coin if key == "coin" else useful_plain) / 1e9,
            "computed_gflop_per_step": computed[name] / 1e9,
            "useful_gflop_per_s": (useful_coin if key == "coin" else useful_plain) / 1e9 / step_s,
            "round_wall_s": clocks["wall"][name],
            "round_cpu_s": clocks["cpu"][name],
            **memory.get(name, {}),
        }
    out = {
        "variants": variants,
        "contrastive_overhead": paired_ratio(times["coin"], times["cit"]) - 1.0,
        "speedup_vs_reference": paired_ratio(times["reference"], times["coin"]),
        "matmul_peak_gflop_per_s": peak / 1e9,
        "matmul_median_gflop_per_s": median(peak_rates) / 1e9,
        "matmul_round_wall_s": clocks["wall"]["matmul"],
        "matmul_round_cpu_s": clocks["cpu"]["matmul"],
        "matmul_flops_per_round": mm_flops,
        "useful_flop_fraction": fraction("coin"),
        "useful_flop_fraction_best_peak": fraction_best_peak("coin"),
        "useful_flops_per_step": {
            "forward": {k: sum(f.forward[k] for f in useful) / n_steps for k in useful[0].forward},
            "backward": {k: sum(f.backward[k] for f in useful) / n_steps for k in useful[0].backward},
        },
        "seconds": seconds,
    }
    if "coin_padded" in times:
        out["useful_flop_fraction_padded"] = fraction("coin_padded")
        out["packing_speedup"] = paired_ratio(times["coin_padded"], times["coin"])
    if "coin_torch_dropout" in times:
        out["useful_flop_fraction_torch_dropout"] = fraction("coin_torch_dropout")
        out["fast_dropout_speedup"] = paired_ratio(times["coin_torch_dropout"], times["coin"])
        out["speedup_vs_reference_same_dropout"] = paired_ratio(times["reference"], times["coin_torch_dropout"])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every section and return the results dict (also written to ``args.output``)."""
    from coin_lightning.io import write_json, write_text
    from coin_lightning.model.loading import ModelArgs, load_model
    from coin_lightning.model.lora import apply_lora

    _quiet()
    started = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    threads, thread_choice = choose_threads(args.threads)
    clock = pick_clock(args.clock, device, threads)
    _log(f"threads: {threads} ({thread_choice['mode']}), device {device}, {precision}, {clock} clock")

    cfg = model_config(args)
    model_args = ModelArgs.from_config(cfg)
    t0 = time.perf_counter()
    base, tokenizer = load_model(cfg)
    torch.manual_seed(args.seed)
    model = apply_lora(base, cfg).to(device)
    load_s = time.perf_counter() - t0
    shape, lora = DecoderShape.from_config(base.config), LoraShape.from_peft(model)
    _log(f"model {cfg['name_or_path']} loaded in {load_s:.1f} s; LoRA r={lora.r} on {sorted(lora.targets)}")

    source = batches_mod.resolve_source(args.data, args.data_root)
    t0 = time.perf_counter()
    data = batches_mod.train_data(tokenizer, source, args.data_root, args.batch_pairs, args.seq_len, args.batches,
                                  args.seed, args.tasks)
    data_s = time.perf_counter() - t0
    batches = [batches_mod.to_device(b, device) for b in data.batches]
    _log(f"data: {source}, padding efficiency {data.padding['length_grouped']['efficiency']:.3f} (length-grouped), "
         f"timed batches {[tuple(b['input_ids'].shape) for b in batches]}")

    with compiled_decoder(model, args.compile):
        training = train_section(args, model, batches, shape, lora, device, precision, clock)
    evaluation = None
    if not args.skip_eval:
        from experiments.benchmarks.evaluation import eval_throughput

        rows = batches_mod.eval_rows(source, args.data_root, args.eval_task, args.eval_rows, args.seed)
        _log(f"evaluation: {rows.task}, {len(rows.contents)} rows, rank and generate, cached and uncached")
        t0 = time.perf_counter()
        evaluation = eval_throughput(model, tokenizer, rows, args.eval_batch_size, args.eval_repeats, args.warmup,
                                     device, precision, clock=clock, decode_batch_size=args.eval_decode_batch_size)
        evaluation["seconds"] = time.perf_counter() - t0

    results = {
        "command": " ".join(["python -m experiments.benchmarks.run", *args.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(device) | {"threads_choice": thread_choice},
        "settings": {
            "model": cfg["name_or_path"], "precision": precision, "threads": threads, "clock": clock,
            "attn": args.attn, "packed_sequences": cfg["packed_sequences"],
            "cpu_speedups": model_args.cpu_speedups,
            "gradient_checkpointing": bool(args.grad_ckpt), "compile": bool(args.compile),
            "lora": {"r": lora.r, "targets": sorted(lora.targets), "dropout": cfg.get("lora", {}).get("dropout")},
            "lambda": args.lambda_, "temperature": args.temperature, "repeats": args.repeats,
            "eval_repeats": args.eval_repeats, "warmup": args.warmup,
            "matmul_size": args.matmul_size, "seed": args.seed,
        },
        "shapes": {
            "decoder": shape.__dict__,
            "batches": [
                {"rows": int(b["input_ids"].shape[0]), "width": int(b["input_ids"].shape[1]),
                 "real_tokens": int(b["attention_mask"].sum()),
                 "response_tokens": int((b["labels"] != -100).sum()), "num_pairs": int(b["num_pairs"])}
                for b in batches
            ],
        },
        "data": {"source": source, "padding": data.padding, "setup_s": data_s},
        "training": training,
        "evaluation": evaluation,
        "model_load_s": load_s,
        "total_s": time.perf_counter() - started,
    }
    results["targets"] = evaluate_targets(results)
    write_json(args.output / "bench.json", results)
    markdown = render_markdown(results)
    write_text(args.output / "bench.md", markdown)
    print(markdown)
    _log(f"wrote {args.output / 'bench.json'} and {args.output / 'bench.md'} in {results['total_s']:.0f} s")
    return results


def evaluate_targets(results: dict) -> dict[str, dict]:
    """Compare the figures with :data:`experiments.benchmarks.report.TARGETS`.

    Returns:
        name -> ``{"value", "target", "met"}`` (``met`` is ``None`` when the figure was not measured).
    """
    t, e = results["training"], results.get("evaluation")
    values = {
        "contrastive_overhead": t["contrastive_overhead"],
        "speedup_vs_reference": t["speedup_vs_reference"],
        "useful_flop_fraction": t["useful_flop_fraction"],
        "padding_efficiency": results["data"]["padding"]["length_grouped"]["efficiency"],
        "prefix_cache_speedup_rank": e["rank"]["cache_speedup"] if e else None,
        "prefix_cache_speedup_generate": e["generate"]["cache_speedup"] if e else None,
        "prefix_cache_identical": (e["rank"]["identical_predictions"] and e["generate"]["identical_predictions"])
        if e else None,
    }
    out = {}
    for name, (op, target) in TARGETS.items():
        v = values[name]
        met = None if v is None else (v <= target if op == "<=" else v >= target if op == ">=" else v == target)
        out[name] = {"value": v, "target": f"{op} {target}", "met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 (figures that miss a target are reported, not an error)."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
