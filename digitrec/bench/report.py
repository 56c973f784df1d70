"""The benchmark's report: the markdown tables and the notes that say how each number was measured."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from digitrec.bench.setup import MATMUL_SIZE


def variants_table(variants: dict[str, dict[str, float]]) -> str:
    rows = [
        [label, f"{r['train_images_per_s']:,.0f}", f"{r['vs_reference']:.2f}×", f"{r['first_step_seconds']:.1f}"]
        for label, r in variants.items()
    ]
    return format_table(("variant", "train img/s", "vs first", "first step s"), rows)


COLUMNS = (
    "model",
    "params",
    "fwd MFLOP/img",
    "train img/s",
    "eval img/s",
    "train GFLOP/s",
    "% peak",
    "epoch s fit",
    "epoch % peak",
    "epoch s per-sample",
    "fit vs per-sample",
    "epoch s plain",
    "fit vs plain",
)


def table_row(name: str, r: dict[str, Any]) -> list[str]:
    epoch = r["epoch_seconds"]
    return [
        name,
        f"{r['parameters']:,}",
        f"{r['forward_mflops']:.1f}",
        f"{r['train_images_per_s']:,.0f}",
        f"{r['eval_images_per_s']:,.0f}",
        f"{r['train_gflops']:.1f}",
        f"{100 * r['train_peak_fraction']:.0f}",
        f"{epoch['trainer_fit']:.1f}",
        f"{100 * r['epoch_peak_fraction']:.0f}",
        f"{epoch['per_sample']:.1f}",
        f"{r['speedup_vs_per_sample']:.2f}×",
        f"{epoch['plain_loop']:.1f}",
        f"{r['fit_vs_plain']:.2f}×",
    ]


def format_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, columns padded to their widest cell."""
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {list(row)} has {len(row)} cells for {len(columns)} columns")
    widths = [max(len(str(c)) for c in col) for col in zip(columns, *rows)]
    lines = [columns, ["-" * w for w in widths], *rows]
    return "\n".join("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in lines)


def report(result: dict[str, Any]) -> str:
    env, aug, plan = result["environment"], result["augmentation"], result["plan"]
    steps, batch = plan["measured_steps"], result["batch_size"]
    lines = [
        f"digitrec benchmark ({env['mode']}): torch {env['torch']}, threads: {env['threads']}, CPU: {env['cpu']}, fp32",
        f"data: {env['data']}",
        f"precision: every table in fp32; `trainer.precision=auto` trains in {env['auto_precision']} on this CPU"
        + (" (see the variants)" if env["auto_precision"] != "32-true" else ""),
        *load_warning(env["load_average_at_start"]),
        f"fp32 matmul peak: {result['matmul_gflops']:.1f} GFLOP/s ({MATMUL_SIZE}×{MATMUL_SIZE} sgemm, median of {plan['matmul_repeats']})",
        "",
        format_table(COLUMNS, [table_row(name, r) for name, r in result["models"].items()]),
        "",
        f"augmentation: batched augment_batch {aug['batched_images_per_s']:,.0f} img/s vs the original project's per-sample "
        f"torchvision v2 {aug['per_sample_images_per_s']:,.0f} img/s: {aug['ratio']:.1f}× faster "
        "(both from uint8 to normalised float; per-sample includes the PIL image torchvision's MNIST makes)",
        "",
        "- FLOPs: multiply-adds of Conv2d/Linear layers counted with forward hooks, 2 FLOPs each (bias, BN, ReLU,",
        "  pooling not counted); a training step ≈ 3× forward; % peak is of the matmul peak above.",
        f"- train img/s: batch {batch}, forward + backward + AdamW + OneCycle (+ gradient clipping) timed inside",
        f"  Trainer.fit: median of {steps // plan['segment']} segments of {plan['segment']} steps after {plan['warmup_steps']} warm-up steps.",
        f"- eval img/s: batch {result['eval_batch_size']}, no grad: median of {plan['eval_repeats']} after 1 warm-up; "
        f"against batch {4 * result['eval_batch_size']}: "
        + ", ".join(
            f"{name} {r['eval_images_per_s'] / r['eval_images_per_s_4x_batch']:.2f}×"
            for name, r in result["models"].items()
        )
        + ".",
        f"- epoch s: training with augmentation + validation, extrapolated from {steps} training batches (after",
        f"  {plan['warmup_steps']} warm-up) and {plan['val_batches'] - 1} validation batch(es) (after 1 warm-up) "
        f"to {result['train_images']:,} + {result['val_images']:,} images.",
        "  fit: Trainer.fit with MNISTDataModule (batched augmentation on the batch's device);",
        "  per-sample: per-sample PIL + torchvision v2 transforms in a DataLoader (num_workers=0), same Trainer.fit;",
        "  plain: a plain PyTorch loop over the same in-memory tensors with batched augmentation.",
        f"  fit and plain alternate {plan['rounds']} time(s): their median epoch, and the median of the per-round ratios.",
        "- fit vs per-sample / fit vs plain: the other pipeline's epoch time over Trainer.fit's (> 1: Trainer.fit is faster).",
    ]
    if result.get("variants"):
        vplan = result["variant_plan"]
        lines += [
            "",
            f"{result['variant_model']} training variants (Trainer.fit, batch {batch}, median of "
            f"{vplan['measured_steps'] // vplan['segment']} segments of {vplan['segment']} steps after "
            f"{vplan['warmup_steps']} warm-up steps; the first step includes compilation):",
            "",
            variants_table(result["variants"]),
        ]
    return "\n".join(lines)


def load_warning(load: float | None) -> list[str]:
    """A note when other processes were already busy: shared cores make every number here low."""
    if load is None or load < 0.5:
        return []
    return [
        f"note: load average was {load:.1f} at start (other processes share the {os.cpu_count()} cores): "
        "rates are lower and noisier than on a quiet machine (--threads 1 suffers less from sharing)."
    ]
