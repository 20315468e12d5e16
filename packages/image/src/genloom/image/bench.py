"""`genloom bench` targets for the image generators: a preset's sampling (tokens to pixels) at a batch size,
with the least work it needs, for the floor column.

Floors (lower bounds): raster AR, one decode step per token, each reading every transformer weight and the
filled KV cache (bandwidth floor); VAR, MaskGIT and MAR, their transformer passes' matrix FLOPs (FLOP floor;
the tokenizer's decoder and MAR's diffusion head are left out, so the true floor is higher).
"""

from __future__ import annotations

import torch

from genloom.core.bench import BenchTarget, Work, transformer_flops, weight_bytes
from genloom.core.sampling.logits import SamplingParams
from genloom.image.cli import shipped_generators
from genloom.image.pipeline import ImagePipeline


def _ar_work(pipeline: ImagePipeline, batch: int, guided: bool) -> Work:
    model = pipeline.generator.transformer
    rows = batch * (2 if guided else 1)
    config = model.config
    kv_per_token = 2 * config.n_layers * config.kv_heads * config.head_size * rows
    element = next(model.parameters()).element_size()
    steps = pipeline.generator.num_tokens
    prefix = pipeline.generator.config.cls_token_num
    kv_read = sum(kv_per_token * (prefix + t) * element for t in range(steps))
    return Work(bytes_moved=steps * weight_bytes(model) + kv_read)


def _pass_work(pipeline: ImagePipeline, batch: int, guided: bool) -> Work:
    gen, rows = pipeline.generator, batch * (2 if guided else 1)
    family = pipeline.family
    if family == "var":
        flops = sum(
            transformer_flops(gen.transformer, rows=rows, queries=end - start, keys=end)
            for start, end in gen.scale_bounds
        )
    elif family == "maskgit":
        tokens = gen.num_tokens
        flops = int(pipeline.info.get("steps", 8)) * transformer_flops(
            gen.transformer, rows=rows, queries=tokens, keys=tokens
        )
    else:  # mar: encoder + decoder over the full sequence per iteration
        tokens = gen.seq_len + gen.config.buffer_size
        per_pass = sum(
            transformer_flops(part, rows=rows, queries=tokens, keys=tokens)
            for part in (gen.encoder, gen.decoder)
            if hasattr(part, "config")
        )
        flops = int(pipeline.info.get("num_iter", 16)) * per_pass
    return Work(flops=flops)


def bench_target(
    name: str, *, device: torch.device, dtype: torch.dtype, fast: bool, random_weights: bool = False
) -> BenchTarget | None:
    """The sampling of the shipped image preset `name` (or, with `random_weights`, of the official
    LlamaGen / VAR architecture `name` randomly initialised), or None if it is neither."""
    if random_weights:
        from genloom.image.official_sizes import RANDOM_WEIGHT_GENERATORS, random_official_pipeline

        if name not in RANDOM_WEIGHT_GENERATORS:
            return None
        pipeline = random_official_pipeline(name)
    elif name in shipped_generators():
        from genloom.image.cli import resolve_model_folder

        pipeline = ImagePipeline.load(resolve_model_folder(name))
    else:
        return None
    pipeline.to(device)
    pipeline.generator.to(dtype)  # the tokenizer stays float32; its decoder runs under autocast
    cfg_scale = float(pipeline.info.get("cfg_scale", 2.0))
    guided = cfg_scale != 1.0
    sampling = SamplingParams(top_k=pipeline.info.get("top_k"), top_p=pipeline.info.get("top_p"))
    classes = len(pipeline.class_names)
    use_fast = fast and device.type == "cuda"
    autocast = dtype != torch.float32

    def run(batch: int) -> torch.Tensor:
        labels = torch.arange(batch) % classes
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            return pipeline.sample(labels, cfg_scale=cfg_scale, sampling=sampling, seed=0, fast=use_fast)

    def work(batch: int) -> Work:
        if pipeline.family == "ar":
            return _ar_work(pipeline, batch, guided)
        return _pass_work(pipeline, batch, guided)

    tokens = getattr(pipeline.generator, "num_tokens", None) or getattr(pipeline.generator, "seq_len", 1)
    return BenchTarget(
        name=f"{name}{' (random weights)' if random_weights else ''} ({pipeline.family}, {pipeline.sampling_steps} network passes per image, CFG {cfg_scale})",
        run=run,
        work=work,
        sample_unit="image",
        unit="token",
        units_per_sample=float(tokens),
    )
