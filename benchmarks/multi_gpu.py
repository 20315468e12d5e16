"""Issue 8's run: sharded generation and FSDP2 training on the GPUs of one host, against one GPU.

    export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
    torchrun --standalone --nproc-per-node 1 benchmarks/multi_gpu.py --task generate-ar --out runs/ar-1  # reference
    torchrun --standalone --nproc-per-node 2 benchmarks/multi_gpu.py --task generate-ar --out runs/ar-2
    torchrun --standalone --nproc-per-node 2 benchmarks/multi_gpu.py --task train --fsdp-bf16 --out runs/train-2

Tasks (random weights at the official sizes; `--size tiny` for a CPU check with gloo):
- `generate-ar`: LlamaGen-B class-conditional sampling (256 tokens, CFG 4.0, top-k 2000, bf16, the compiled
  decoder), `--samples` images in chunks of `--chunk`; chunk c is class-conditioned on classes
  c*chunk.. and seeded with c, so the tokens do not depend on how chunks are spread over ranks;
- `generate-var`: VAR-d16 (CFG 1.5, top-k 900, top-p 0.96, per-scale CUDA graphs), chunked the same way;
- `train`: `--steps` steps of FSDP2 training of a LlamaGen-B-size model on synthetic tokens (bf16 autocast).

Generation goes through `genloom.core.train.generate_sharded`: each rank takes a contiguous block of chunks,
writes each finished chunk to its own file (a restarted job skips finished chunks), and every rank reads all
chunks back in order. Rank 0 writes `summary.json`: samples or tokens per second, peak memory of every rank,
and for generation a SHA-256 of all tokens in order, which must equal the single-GPU run's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from genloom.core.io import atomic_write_json
from genloom.core.reproducible import use_reproducible_kernels
from genloom.core.sampling.logits import SamplingParams
from genloom.core.train.distributed import barrier, generate_sharded, init_distributed, wrap_model

MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def llamagen(size: str, device: torch.device, dtype: torch.dtype):  # noqa: ANN201
    """LlamaGen-B (or a tiny GPT for CPU checks) at random init, the same weights on every rank."""
    from genloom.image.official_sizes import LLAMAGEN_SIZES, random_llamagen

    torch.manual_seed(0)
    if size == "B":
        return random_llamagen(*LLAMAGEN_SIZES["llamagen-b"]).to(device, dtype)
    return random_llamagen(64, 2, 4, grid=(4, 4), vocab_size=256).to(device, dtype)


def var(size: str, device: torch.device, dtype: torch.dtype):  # noqa: ANN201
    """VAR-d16 and its VQVAE (or tiny ones for CPU checks) at random init, the same on every rank."""
    from genloom.image.official_sizes import random_var
    from genloom.image.tokenizers.multiscale_autoencoder import MultiScaleVQAutoencoderConfig

    torch.manual_seed(0)
    if size == "B":
        model, vae = random_var(16)
    else:
        model, vae = random_var(
            2, tokenizer_config=MultiScaleVQAutoencoderConfig(patch_nums=[1, 2, 3], codebook_size=64)
        )
    return model.to(device, dtype).eval(), vae.to(device).eval()


def generate_task(args: argparse.Namespace, device: torch.device, rank: int, world: int) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n_chunks = -(-args.samples // args.chunk)
    use_reproducible_kernels()  # no cuDNN attention, no inductor autotuning: ranks sample what one GPU samples
    if args.task == "generate-ar":
        model = llamagen(args.size, device, dtype).eval()
        params = SamplingParams(top_k=2000 if args.size == "B" else 50)
        compiled = True if device.type == "cuda" else False

        def make(chunk: int) -> list[list[int]]:
            labels = (torch.arange(args.chunk, device=device) + chunk * args.chunk) % 1000
            generator = torch.Generator(device).manual_seed(chunk)
            tokens = model.generate(
                labels, cfg_scale=4.0, sampling=params, generator=generator, compiled=compiled
            )
            return tokens.tolist()
    else:
        model, vae = var(args.size, device, dtype)
        params = SamplingParams(top_k=900, top_p=0.96)

        def make(chunk: int) -> list[list[int]]:
            labels = (torch.arange(args.chunk, device=device) + chunk * args.chunk) % 1000
            generator = torch.Generator(device).manual_seed(chunk)
            ids = model.generate(labels, vae.quantize, cfg_scale=1.5, sampling=params, generator=generator,
                                 graphed=device.type == "cuda")  # fmt: skip
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
                vae.decode(ids)  # the images are part of the work; the tokens are what is compared
            return ids.tolist()

    for _ in range(
        2
    ):  # warm-up outside the timed region (compilation; the AR's loop graph is captured on call 2)
        make(0)
    barrier()
    start = time.perf_counter()
    chunks = generate_sharded(make, n_chunks, Path(args.out) / "chunks", rank=rank, world=world)
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(json.dumps(chunks).encode()).hexdigest()
    per_chunk = [hashlib.sha256(json.dumps(chunk).encode()).hexdigest()[:8] for chunk in chunks]
    return {"samples": n_chunks * args.chunk, "seconds": seconds, "samples_per_s": n_chunks * args.chunk / seconds,
            "tokens_sha256": digest, "chunk_sha256_prefixes": per_chunk}  # fmt: skip


def train_task(args: argparse.Namespace, device: torch.device, rank: int, world: int) -> dict:
    model = llamagen(args.size, device, torch.float32).train()
    param_dtype = torch.bfloat16 if args.fsdp_bf16 and world > 1 else None
    model = wrap_model(
        model, strategy="fsdp2" if world > 1 else "none", device=device, fsdp_param_dtype=param_dtype
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch, tokens_per_row = args.train_batch, model.num_tokens
    generator = torch.Generator(device).manual_seed(1000 + rank)  # each rank its own synthetic batch
    vocab = model.vocab_size

    def step() -> torch.Tensor:
        labels = torch.randint(0, 1000, (batch,), device=device, generator=generator)
        tokens = torch.randint(0, vocab, (batch, tokens_per_row), device=device, generator=generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model.loss(labels, tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    final_loss = loss.item()  # waits for the last step
    barrier()
    seconds = time.perf_counter() - start
    tokens = args.steps * batch * tokens_per_row * world
    return {
        "steps": args.steps,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "final_loss": final_loss,
        "rows_per_rank": batch,
        "fsdp_param_dtype": str(param_dtype),
    }


def main() -> None:
    os.environ.update(MULTICAST_OFF)  # never NVLink multicast, also in processes torchrun starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["generate-ar", "generate-var", "train"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=["B", "tiny"], default="B")
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--train-batch", type=int, default=16, help="rows per rank per step")
    parser.add_argument(
        "--fsdp-bf16", action="store_true", help="FSDP2 gathers bf16 parameters (fp32 master, fp32 reduce)"
    )
    args = parser.parse_args()
    info = init_distributed()
    device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # a one-process run has no process group that would do it
        torch.cuda.reset_peak_memory_stats(device)
    task = train_task if args.task == "train" else generate_task
    result = task(args, device, info.rank, info.world_size)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    peaks = [peak]
    if info.world_size > 1:
        peaks = [None] * info.world_size
        dist.all_gather_object(peaks, peak)
    if info.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
        summary = {"task": args.task, "size": args.size, "world_size": info.world_size, **result,
                   "peak_memory_bytes_per_rank": peaks,
                   "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}  # fmt: skip
        atomic_write_json(args.out / "summary.json", summary)
        print(json.dumps(summary, indent=2))
    if dist.is_initialized():
        barrier()  # every rank past its last collective before any tears the group down (gloo aborted otherwise)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
