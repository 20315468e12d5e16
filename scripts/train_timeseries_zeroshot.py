"""Pretrain a zero-shot forecaster (tokenised AR, the shipped default, or diffusion) on the offline mix and write its preset folder.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_timeseries_zeroshot.py \
        --out packages/timeseries/src/genloom/timeseries/presets/tiny-tokenized-ar

Prints the zero-shot MASE on the held-out cases beside seasonal naive, and stores both in preset.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from genloom.timeseries.models.diffusion import DiffusionConfig, DiffusionForecaster
from genloom.timeseries.models.tokenized_ar import TokenizedARForecaster, forecaster_transformer_config
from genloom.timeseries.pretrained import save_forecaster
from genloom.timeseries.tokenizer import BinTokenizerConfig
from genloom.timeseries.zeroshot import heldout_cases, pretrain, training_pool, zero_shot_mase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--n-bins", type=int, default=256)
    parser.add_argument("--context-len", type=int, default=64)
    parser.add_argument("--pred-len", type=int, default=32)
    parser.add_argument("--n-synthetic", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--family", choices=["tokenized-ar", "diffusion"], default="tokenized-ar")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.time()
    if args.family == "diffusion":
        model = DiffusionForecaster(
            DiffusionConfig(
                context_len=args.context_len,
                pred_len=args.pred_len,
                hidden=args.d_model,
                n_layers=args.layers,
                n_steps=100,
            )
        ).to(args.device)
    else:
        model = TokenizedARForecaster(
            forecaster_transformer_config(
                dim=args.d_model,
                n_layers=args.layers,
                n_heads=4,
                mlp_hidden_dim=4 * args.d_model,
                max_seq_len=args.context_len + args.pred_len,
                dropout=0.0,
            ),
            BinTokenizerConfig(n_bins=args.n_bins, limit=4.0, scaling="standard"),
            context_len=args.context_len,
        ).to(args.device)
    pool = training_pool(n_synthetic=args.n_synthetic)
    losses = pretrain(
        model,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        pred_len=args.pred_len,
        seed=args.seed,
        pool=pool,
    )
    model = model.cpu().eval()
    rows = zero_shot_mase(
        lambda h, n: model.forecast(h, n, num_samples=20, seed=0).median[0], heldout_cases()
    )
    for name, (ours, naive) in rows.items():
        print(f"{name:>20}: MASE ours {ours:.3f}  seasonal naive {naive:.3f}")
    ours_mean = float(np.mean([r[0] for r in rows.values()]))
    naive_mean = float(np.mean([r[1] for r in rows.values()]))
    print(f"mean MASE: ours {ours_mean:.3f}, seasonal naive {naive_mean:.3f} ({time.time() - start:.0f}s)")
    preset = {
        "name": args.out.name,
        "family": model.config_dict()["family"],
        "description": f"Tiny {args.family} forecaster pretrained on statsmodels series + synthetic mix",
        "training": {k: v for k, v in vars(args).items() if k not in ("out", "device")},
        "final_loss": float(np.mean(losses[-100:])),
        "zero_shot_mase": {
            "ours": ours_mean,
            "seasonal_naive": naive_mean,
            "per_case": {k: {"ours": v[0], "seasonal_naive": v[1]} for k, v in rows.items()},
        },
    }
    save_forecaster(model, args.out, preset=preset, dtype=torch.float32)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
