"""VectorQuantizer: lookup, EMA updates, usage statistics, dead-code restart and a short training run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from genloom.core.tokenizers import TokenizerInputError, VectorQuantizer
from genloom.core.tokenizers import vq as vq_module
from genloom.core.tokenizers.vq import mark_used_codes, nearest_code, restart_idle_codes

NUM_CLUSTERS, DIM = 32, 8


def cluster_centers() -> torch.Tensor:
    return torch.randn(NUM_CLUSTERS, DIM, generator=torch.Generator().manual_seed(0)) * 3


def mixture_batch(
    centers: torch.Tensor, n: int, generator: torch.Generator, noise: float = 0.1
) -> torch.Tensor:
    labels = torch.randint(len(centers), (n,), generator=generator)
    return centers[labels] + noise * torch.randn(n, centers.shape[1], generator=generator)


def train_on_mixture(*, dead_code_after: int | None, use_ema: bool = False, steps: int = 300):
    """Fit a 32-code VQ to a 32-cluster mixture; returns (quantizer, error before, metrics after)."""
    torch.manual_seed(0)
    centers = cluster_centers()
    gen = torch.Generator().manual_seed(1)
    q = VectorQuantizer(
        dim=DIM, codebook_size=NUM_CLUSTERS, use_ema=use_ema, dead_code_after=dead_code_after, usage_window=20
    )
    optimizer = torch.optim.Adam(q.parameters(), lr=0.05) if not use_ema else None
    held_out = mixture_batch(centers, 2048, torch.Generator().manual_seed(2))
    error_before = q.eval()(held_out).metrics["quantization_error"]
    q.train()
    for _ in range(steps):
        out = q(mixture_batch(centers, 512, gen))
        if optimizer is not None:
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    usage = q.codebook_usage()
    metrics = q.eval()(held_out).metrics
    return q, error_before, {**metrics, "codebook_usage": usage}


@pytest.mark.parametrize("use_ema", [False, True])
def test_training_with_dead_code_restart_uses_most_codes(use_ema):
    _, error_before, after = train_on_mixture(dead_code_after=10, use_ema=use_ema)
    assert after["codebook_usage"] >= 0.9  # codes picked in the last 20 steps
    assert after["perplexity"] > 0.75 * NUM_CLUSTERS
    assert after["quantization_error"] < 0.1 * error_before
    _, _, without_restart = train_on_mixture(dead_code_after=None, use_ema=use_ema)
    assert after["quantization_error"] < 0.5 * without_restart["quantization_error"]
    assert without_restart["perplexity"] < after["perplexity"]


def test_ema_moves_codes_to_cluster_means():
    centers = cluster_centers()[:8]
    q = VectorQuantizer(dim=DIM, codebook_size=8, use_ema=True, ema_decay=0.9)
    start = centers + 0.5 * torch.randn(centers.shape, generator=torch.Generator().manual_seed(3))
    q.embedding.weight.data.copy_(start)
    q.ema_embed_sum.copy_(start)
    gen = torch.Generator().manual_seed(4)
    q.train()
    for _ in range(150):
        q(mixture_batch(centers, 256, gen, noise=0.05))
    assert (start - centers).norm(dim=1).min() > 0.5
    assert (q.embedding.weight - centers).norm(dim=1).max() < 0.03


def test_ema_single_step_matches_formula():
    q = VectorQuantizer(dim=2, codebook_size=3, use_ema=True, ema_decay=0.8, ema_eps=1e-3)
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    q.embedding.weight.data.copy_(codebook)
    q.ema_embed_sum.copy_(codebook)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 1.0]])  # codes 0, 0, 1
    q.train()(x)
    size = 0.8 * torch.ones(3) + 0.2 * torch.tensor([2.0, 1.0, 0.0])
    total = size.sum()
    smoothed = (size + 1e-3) / (total + 3 * 1e-3) * total
    embed_sum = 0.8 * codebook + 0.2 * torch.tensor([[1.0, 1.0], [9.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(q.ema_cluster_size, size)
    torch.testing.assert_close(q.embedding.weight, embed_sum / smoothed[:, None])


def test_codebook_loss_trains_only_used_codes_and_commitment_reaches_input():
    q = VectorQuantizer(dim=4, codebook_size=6, beta=0.25).train()
    q.embedding.weight.data.normal_()
    z = torch.randn(10, 4, requires_grad=True)
    out = q(z)
    out.loss.backward()
    used = torch.zeros(6, dtype=torch.bool)
    used[out.indices.unique()] = True
    grad_norm = q.embedding.weight.grad.norm(dim=1)
    assert (grad_norm[used] > 0).all() and (grad_norm[~used] == 0).all()
    expected_input_grad = 0.25 * 2 * (z - q.embedding.weight[out.indices]).detach() / z.numel()
    torch.testing.assert_close(z.grad, expected_input_grad)


def test_dead_codes_are_replaced_by_batch_vectors():
    q = VectorQuantizer(dim=3, codebook_size=4, dead_code_after=2).train()
    q.embedding.weight.data.copy_(torch.tensor([[0.0, 0, 0], [100, 100, 100], [-100, 0, 0], [0, 0, 100]]))
    batch = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)) * 0.1
    q(batch)
    assert torch.equal(q.embedding.weight[1], torch.tensor([100.0, 100, 100]))  # idle 1 step: kept
    q(batch)  # now codes 1..3 have been idle for 2 steps
    replaced = q.embedding.weight[1:]
    distances = torch.cdist(replaced, batch)
    assert (distances.min(dim=1).values < 1e-6).all()
    assert q.last_used_step.tolist() == [2, 2, 2, 2]


def test_restart_idle_codes_replaces_only_idle_rows_in_place():
    """The restart shared by VectorQuantizer and MultiScaleResidualVQ."""
    weight = torch.arange(12.0).view(4, 3)
    train_steps, last_used = torch.tensor(5), torch.tensor([5, -1, 2, 4])
    vectors = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) + 50
    dead = restart_idle_codes(weight, train_steps, last_used, after=3, vectors=vectors)
    assert dead.tolist() == [False, True, True, False]  # idle 0, 5, 3, 1 steps
    assert torch.equal(weight[[0, 3]], torch.tensor([[0.0, 1, 2], [9, 10, 11]]))
    assert (torch.cdist(weight[1:3], vectors).min(dim=1).values < 1e-6).all()
    assert not torch.equal(weight[1], weight[2])
    assert last_used.tolist() == [5, 5, 5, 4]
    mark_used_codes(train_steps, last_used, torch.tensor([0, 0, 0, 3]))
    assert int(train_steps) == 6 and last_used.tolist() == [5, 5, 5, 6]


def test_restart_counter_is_a_run_statistic_not_saved():
    q = VectorQuantizer(dim=3, codebook_size=4, dead_code_after=1).train()
    q(torch.zeros(5, 3))
    assert int(q.codes_restarted) == 3 and "codes_restarted" not in q.state_dict()
    q.eval()(torch.randn(5, 3))
    assert int(q.train_steps) == 1 and int(q.codes_restarted) == 3


def test_usage_window_counts_recent_codes():
    q = VectorQuantizer(dim=2, codebook_size=4, usage_window=3).train()
    q.embedding.weight.data.copy_(torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10]]))
    assert q.codebook_usage() == 0.0
    q(torch.tensor([[0.1, 0.0], [9.9, 0.1]]))  # codes 0, 1 at step 1
    assert q.codebook_usage() == 0.5
    for _ in range(2):
        q(torch.tensor([[0.0, 9.0]]))  # code 2 at steps 2, 3
    assert q.codebook_usage() == 0.75
    q(torch.tensor([[0.0, 9.0]]))  # step 4: codes 0, 1 were last used 3 steps ago
    assert q.codebook_usage() == 0.25


def test_l2_normalized_lookup_is_cosine_nearest():
    q = VectorQuantizer(dim=5, codebook_size=16, l2_normalize=True).eval()
    q.embedding.weight.data.normal_()
    z = torch.randn(40, 5)
    out = q(z)
    cosine = F.normalize(z, dim=-1) @ F.normalize(q.embedding.weight, dim=-1).T
    assert torch.equal(out.indices, cosine.argmax(dim=1))
    torch.testing.assert_close(out.codes.norm(dim=-1), torch.ones(40))


def test_nearest_code_matches_brute_force_and_chunks(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    z, codebook = torch.randn(300, 6, generator=gen), torch.randn(50, 6, generator=gen)
    expected = torch.cdist(z, codebook).argmin(dim=1)
    assert torch.equal(nearest_code(z, codebook), expected)
    monkeypatch.setattr(vq_module, "_MAX_DISTANCE_ENTRIES", 50 * 7)  # 7 rows per chunk
    assert torch.equal(nearest_code(z, codebook), expected)
    assert torch.equal(nearest_code(z.bfloat16(), codebook), nearest_code(z.bfloat16().float(), codebook))


def test_channel_first_layout_equals_channel_last():
    torch.manual_seed(0)
    first = VectorQuantizer(dim=4, codebook_size=8, channel_dim=1).eval()
    last = VectorQuantizer(dim=4, codebook_size=8, channel_dim=-1).eval()
    last.load_state_dict(first.state_dict())
    z = torch.randn(2, 4, 3, 5)
    out_first, out_last = first(z), last(z.permute(0, 2, 3, 1))
    assert out_first.indices.shape == (2, 3, 5)
    assert torch.equal(out_first.indices, out_last.indices)
    torch.testing.assert_close(out_first.codes, out_last.codes.permute(0, 3, 1, 2))


def test_bad_configuration_and_input_errors():
    with pytest.raises(ValueError, match="ema_decay"):
        VectorQuantizer(dim=4, codebook_size=8, use_ema=True, ema_decay=1.0)
    q = VectorQuantizer(dim=4, codebook_size=8)
    with pytest.raises(TokenizerInputError, match="floating-point"):
        q(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TokenizerInputError, match="at least 2 dims"):
        q(torch.ones(4))


# ----------------------------------------------------------------------------------------------------
# Parity with LlamaGen's VQ-16 quantizer (l2-normalised codebook), from ../shared/parity/llamagen.

SHARED = Path(os.environ.get("GENLOOM_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared"))
LLAMAGEN_DIR = SHARED / "parity" / "llamagen"


@pytest.mark.parity
def test_llamagen_vq_parity_indices_and_quantized_latent():
    if not (LLAMAGEN_DIR / "cases.safetensors").is_file():
        pytest.skip("LlamaGen parity fixture (../shared/parity/llamagen) not present")
    config = json.loads((LLAMAGEN_DIR / "config.json").read_text())["vq_ModelArgs_resolved"]
    weights = load_file(str(LLAMAGEN_DIR / "vq.safetensors"))
    cases = load_file(str(LLAMAGEN_DIR / "cases.safetensors"))
    q = VectorQuantizer(
        dim=config["codebook_embed_dim"],
        codebook_size=config["codebook_size"],
        l2_normalize=config["codebook_l2_norm"],
        beta=config["commit_loss_beta"],
        channel_dim=1,
    ).eval()
    # LlamaGen's quantizer holds the codebook plus a usage ring buffer (`codebook_used`) we do not need.
    missing, unexpected = q.load_state_dict(
        {"embedding.weight": weights["quantize.embedding.weight"]}, strict=False
    )
    assert unexpected == [] and set(missing) == {"train_steps", "last_used_step"}
    out = q(cases["vq.h_pre_quant"])
    assert torch.equal(out.indices.flatten(), cases["vq.indices"])  # (b, h, w) order
    torch.testing.assert_close(out.codes, cases["vq.quant"], atol=1e-5, rtol=0)
    decoded = q.indices_to_codes(cases["vq.indices"].view(out.indices.shape))
    torch.testing.assert_close(decoded, cases["vq.quant"], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------
# torch.distributed: EMA statistics and restarts must stay identical across ranks.


def _distributed_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        batches = _rank_batches(world)
        for name, dead_code_after in (("ema", None), ("restart", 3)):
            torch.manual_seed(0)
            q = VectorQuantizer(
                dim=4, codebook_size=16, use_ema=True, ema_decay=0.9, dead_code_after=dead_code_after
            )
            torch.manual_seed(100 + rank)  # ranks draw different restart candidates; rank 0's must win
            q.train()
            for step_batches in batches:
                q(step_batches[rank])
            save_file(
                {k: v.contiguous() for k, v in q.state_dict().items()}, f"{out_dir}/{name}{rank}.safetensors"
            )
    finally:
        dist.destroy_process_group()


def _rank_batches(world: int) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(9)
    return [[torch.randn(32, 4, generator=gen) * 2 for _ in range(world)] for _ in range(6)]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_distributed_ema_and_restarts_agree_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    world = 2
    context = mp.get_context("fork")
    procs = [
        context.Process(target=_distributed_worker, args=(r, world, str(tmp_path / "store"), str(tmp_path)))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():  # a hung rank must not outlive the test
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    for name in ("ema", "restart"):
        rank0, rank1 = (load_file(str(tmp_path / f"{name}{r}.safetensors")) for r in range(world))
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), name
    # the all-reduced EMA equals one process seeing both ranks' batches at once
    torch.manual_seed(0)
    single = VectorQuantizer(dim=4, codebook_size=16, use_ema=True, ema_decay=0.9).train()
    for step_batches in _rank_batches(world):
        single(torch.cat(step_batches))
    ema0 = load_file(str(tmp_path / "ema0.safetensors"))
    torch.testing.assert_close(ema0["embedding.weight"], single.embedding.weight, atol=1e-5, rtol=1e-5)
    assert torch.equal(ema0["last_used_step"], single.last_used_step)
