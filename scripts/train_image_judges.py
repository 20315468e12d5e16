"""Train the judge classifiers of genloom-image (digits, shapes) on CPU and write them as presets.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_image_judges.py \
        --out packages/image/src/genloom/image/presets

Each judge trains in under three minutes on one CPU thread and is saved as fp16 safetensors in
`<out>/judge-<dataset>/` with its held-out accuracy recorded in `preset.json`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genloom.image.data import load_dataset
from genloom.image.io import write_json
from genloom.image.judge import Judge, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder that receives judge-<dataset>/")
    parser.add_argument("--datasets", nargs="+", default=["digits", "shapes"])
    parser.add_argument("--epochs", type=int, default=None, help="override the per-data-set epoch count")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    default_epochs = {"digits": 12, "shapes": 3}
    for name in args.datasets:
        start = time.time()
        train, test = load_dataset(name, "train"), load_dataset(name, "test")
        epochs = args.epochs or default_epochs.get(name, 10)
        judge = train_classifier(train, epochs=epochs, seed=args.seed, max_shift=2 if name == "digits" else 0)
        folder = args.out / f"judge-{name}"
        judge.save(folder / "model")
        # Reload the fp16 copy: the accuracy we record is that of the shipped weights.
        shipped = Judge.load(folder / "model")
        accuracy = (shipped.predict(test.images) == test.labels).float().mean().item()
        seconds = time.time() - start
        write_json(
            folder / "preset.json",
            {
                "name": f"judge-{name}",
                "family": "image.judge",
                "dataset": name,
                "held_out_accuracy": round(accuracy, 4),
                "held_out_images": len(test),
                "epochs": epochs,
                "seed": args.seed,
                "train_seconds_cpu": round(seconds, 1),
                "torch_threads": torch.get_num_threads(),
            },
        )
        print(f"judge-{name}: held-out accuracy {accuracy:.4f} on {len(test)} images, {seconds:.0f}s")


if __name__ == "__main__":
    main()
