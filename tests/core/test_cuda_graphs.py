"""GraphCache: replays give the function's result for new inputs, per key and shape; off CUDA it just calls."""

from __future__ import annotations

import pytest
import torch

from genloom.core.nn.cuda_graphs import GraphCache


def test_off_cuda_the_function_is_called_directly() -> None:
    calls = []
    cache = GraphCache(lambda x: calls.append(1) or x * 2)
    assert torch.equal(cache("k", torch.ones(3)), torch.full((3,), 2.0))
    assert calls == [1] and len(cache) == 0


@pytest.mark.gpu
def test_replays_follow_new_inputs_and_in_place_state() -> None:
    state = torch.zeros(4, device="cuda")

    def step(x: torch.Tensor) -> torch.Tensor:
        state.add_(x.sum())  # module state mutated in place, as a KV cache write is
        return torch.tanh(x) * 3

    cache = GraphCache(step, warmup=1)
    for seed in range(3):
        x = torch.randn(8, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        torch.testing.assert_close(cache("a", x).clone(), torch.tanh(x) * 3)
    assert len(cache) == 1
    cache("a", torch.randn(2, 16, device="cuda"))  # a new shape: a second graph
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0


def test_host_inputs_without_a_cuda_device_just_call() -> None:
    cache = GraphCache(lambda x: x + 1, device="cpu")
    assert torch.equal(cache("k", torch.zeros(2)), torch.ones(2)) and len(cache) == 0


@pytest.mark.gpu
def test_host_inputs_are_copied_into_the_graph_on_its_device() -> None:
    cache = GraphCache(lambda x: (x * 2).sum(1), warmup=1, device="cuda")
    for seed in range(3):
        x = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(seed))  # on the host
        out = cache("a", x)
        assert out.is_cuda and torch.equal(out.cpu(), (x * 2).sum(1))
    assert len(cache) == 1


def test_memory_fingerprint_changes_when_weights_or_cache_move_not_when_loaded_in_place() -> None:
    from torch import nn

    from genloom.core.nn import Transformer, TransformerConfig
    from genloom.core.nn.cuda_graphs import memory_fingerprint

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    before = memory_fingerprint(model)
    model.load_state_dict({k: v + 1 for k, v in model.state_dict().items()})
    assert memory_fingerprint(model) == before
    model.double()
    assert memory_fingerprint(model) != before
    assert memory_fingerprint(None) == ()
    lm = Transformer(TransformerConfig(dim=16, n_layers=2, n_heads=2, vocab_size=8, max_seq_len=8))
    lm.setup_cache(2, 8)
    cached = memory_fingerprint(lm)
    lm.setup_cache(2, 8)  # same sizes: reset in place
    assert memory_fingerprint(lm) == cached
    # keep the old buffers alive: freed, the allocator may hand the very same addresses to the new cache
    old_buffers = [(layer.attn.kv_cache.k_cache, layer.attn.kv_cache.v_cache) for layer in lm.layers]
    lm.remove_cache()
    lm.setup_cache(2, 8)  # reallocated
    assert memory_fingerprint(lm) != cached
    del old_buffers
    # weights only (a pass without caches): blind to the cache, still sees the weights move
    weights_only = memory_fingerprint(lm, caches=False)
    lm.remove_cache()
    lm.setup_cache(2, 8)
    assert memory_fingerprint(lm, caches=False) == weights_only
    lm.double()
    assert memory_fingerprint(lm, caches=False) != weights_only


@pytest.mark.gpu
def test_moved_weights_are_recaptured() -> None:
    from torch import nn

    layer = nn.Linear(16, 16).cuda()
    cache = GraphCache(lambda x: layer(x), watch=layer, warmup=1)
    x = torch.randn(4, 16, device="cuda")
    torch.testing.assert_close(cache("k", x).clone(), layer(x))
    with torch.no_grad():
        layer.half().float()  # new tensors, same dtype: the graph's shapes match but its addresses are stale
        layer.weight.mul_(2)
    cache.refresh()
    torch.testing.assert_close(cache("k", x).clone(), layer(x))


def test_capture_check_finds_host_reads_and_host_copies_on_cpu() -> None:
    from genloom.core.nn.capture_check import CaptureCheckError, check_capturable

    x = torch.randn(3, 5, device="meta")
    constructors = (torch.tensor, torch.as_tensor)

    def clean(t: torch.Tensor) -> torch.Tensor:
        width = t.shape[1] + 1  # host arithmetic on shapes is fine
        return torch.full((t.shape[0], width), 2.0, device=t.device) + t.softmax(-1).sum(-1, keepdim=True)

    assert check_capturable(clean, x).shape == (3, 6)
    with pytest.raises(CaptureCheckError, match="reads a value"):
        check_capturable(lambda t: torch.zeros(int(t.sum().item()), device=t.device), x)
    with pytest.raises(CaptureCheckError, match="reads a value"):
        check_capturable(lambda t: t[t > 0], x)  # data-dependent shape
    with pytest.raises(CaptureCheckError, match="host tensor"):
        check_capturable(lambda t: t.index_fill(1, torch.tensor([0, 2]).to(t.device), 0.0), x)
    # made on the device from host data: no operator sees a CPU tensor on meta, the constructor is refused
    with pytest.raises(CaptureCheckError, match="copies host data"):
        check_capturable(lambda t: t.index_fill(1, torch.tensor([0, 2], device=t.device), 0.0), x)
    with pytest.raises(CaptureCheckError, match="copies host data"):
        check_capturable(lambda t: t + torch.as_tensor([1.0] * 5, device=t.device), x)
    host_shape = check_capturable(lambda t: t + torch.as_tensor(t, device=t.device) * torch.tensor(2.0), x)
    assert host_shape.shape == (3, 5)  # a device tensor re-wrapped, a CPU scalar: no copy of host data
    assert (torch.tensor, torch.as_tensor) == constructors  # restored after the check
    with pytest.raises(CaptureCheckError, match="meta device"):
        check_capturable(clean, torch.ones(2, 2))
