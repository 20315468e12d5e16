"""`genloom bench` targets for the image generators: a preset's sampling (tokens to pixels) at a batch size,
with the least work it needs, for the floor column.

Floors (lower bounds): raster AR, one decode step per token, each reading every transformer weight and the
filled KV cache (bandwidth floor); VAR, MaskGIT and MAR, their transformer passes' matrix FLOPs (FLOP floor;
the tokenizer's decoder and MAR's diffusion head are left out, so the true floor is higher).
"""

from __future__ import annotations

import torch

from genloom.core.bench import BenchTarget, Work, transformer_flops, weight_bytes
from genloom.image.cli import shipped_generators
from genloom.image.models.next_scale import NextScaleAR
from genloom.image.models.raster_ar import RasterAR
from genloom.image.pipeline import ImagePipeline


def raster_ar_decode_bytes(generator: RasterAR, rows: int) -> float:
    """Least bytes a raster-AR generation of `rows` sequences reads: every decode step reads all transformer
    weights and the KV cache filled so far (the class prefix and the tokens before it)."""
    model = generator.transformer
    config = model.config
    element = next(p for p in model.parameters() if p.is_floating_point()).element_size()  # the cache dtype
    kv_per_token = 2 * config.n_layers * config.kv_heads * config.head_size * rows * element
    steps, prefix = generator.num_tokens, generator.config.cls_token_num
    kv_read = sum(kv_per_token * (prefix + t) for t in range(steps))
    return steps * weight_bytes(model) + kv_read


def next_scale_flops(generator: NextScaleAR, rows: int) -> float:
    """Matrix FLOPs of VAR's transformer over all scales for `rows` sequences (each scale's queries attend
    to every key up to the end of their scale)."""
    return sum(
        transformer_flops(generator.transformer, rows=rows, queries=end - start, keys=end)
        for start, end in generator.scale_bounds
    )


def _ar_work(pipeline: ImagePipeline, batch: int, guided: bool) -> Work:
    return Work(bytes_moved=raster_ar_decode_bytes(pipeline.generator, batch * (2 if guided else 1)))


def _pass_work(pipeline: ImagePipeline, batch: int, guided: bool) -> Work:
    gen, rows = pipeline.generator, batch * (2 if guided else 1)
    family = pipeline.family
    if family == "var":
        flops = next_scale_flops(gen, rows)
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
    cfg_scale = pipeline.default_cfg_scale
    guided = cfg_scale != 1.0
    sampling = pipeline.default_sampling()
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
