"""The trainer under `torchrun --nproc-per-node 2` on CPU (gloo): DDP and FSDP2 against one process.

One torchrun job (started once per test module, ~20-40 s on 2 cores) runs every distributed scenario and
writes its findings; the tests below compare them with single-process runs made here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from genloom.core.io import load_safetensors
from genloom.core.train import TrainConfig, Trainer, distributed_loader, gather_in_order, shard_indices

WORKER = textwrap.dedent(
    """
    import faulthandler, json, sys, traceback
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import TensorDataset

    from genloom.core.errors import ConfigError
    from genloom.core.train import (TrainConfig, Trainer, distributed_loader, gather_in_order, generate_sharded,
                                    init_distributed, shard_indices)
    from genloom.core.train.distributed import barrier

    faulthandler.dump_traceback_later(150, exit=True)  # a collective mismatch must fail, not hang
    out = Path(sys.argv[1])
    info = init_distributed(backend="gloo")  # CPU test, even on a machine with GPUs
    assert info.world_size == 2 and dist.get_backend() == "gloo"

    def dataset():
        g = torch.Generator().manual_seed(11)
        x = torch.randn(48, 4, generator=g)
        return TensorDataset(x, torch.tanh(x @ torch.randn(4, 4, generator=g)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 16), nn.Linear(16, 16)])
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            for block in self.blocks:
                x = torch.relu(block(x))
            return self.head(x)

    class Crash(RuntimeError):
        pass

    def run(strategy, folder, crash_after_calls=None, precision="auto"):
        calls = [0]
        def step(model, batch):
            calls[0] += 1
            if crash_after_calls is not None and calls[0] > crash_after_calls:
                raise Crash()
            x, y = batch
            return nn.functional.mse_loss(model(x), y)
        torch.manual_seed(0)
        model = Net()
        config = TrainConfig(steps=6, lr=1e-2, warmup_steps=2, grad_accum=2, clip_grad_norm=0.5, ema_decay=0.9,
                             weight_decay=0.1, strategy=strategy, out_dir=str(folder), device="cpu", ckpt_every=3, log_every=1,
                             progress=False, seed=3, precision=precision)
        loader = distributed_loader(dataset(), batch_size=4, shuffle=True, seed=5)
        Trainer(model, step, loader, config).fit()

    report = {}
    for strategy in ("ddp", "fsdp2"):
        try:
            run(strategy, out / strategy)
            try:
                run(strategy, out / f"{strategy}-resumed", crash_after_calls=7)  # dies in step 4
            except Crash:
                pass
            barrier()
            run(strategy, out / f"{strategy}-resumed")
            report[strategy] = "ok"
        except Exception:
            report[strategy] = traceback.format_exc()
            barrier()

    # FSDP2 under bf16 autocast: parameters gathered in bf16, float32 master weights and reduction
    try:
        run("fsdp2", out / "fsdp2-bf16", precision="bf16")
        report["fsdp2-bf16"] = "ok"
    except Exception:
        report["fsdp2-bf16"] = traceback.format_exc()
        barrier()

    # ordered gather of uneven shards
    local = [i * i for i in shard_indices(11, info.rank, 2)]
    report["gathered"] = gather_in_order(local, n_items=11)

    # resumable sharded generation: rank 1 "crashes" at item 7 in the first pass
    made = []
    def generate(i):
        if first_pass and i == 7:
            raise Crash()
        made.append(i)
        return {"item": i, "square": i * i}
    first_pass = True
    try:
        generate_sharded(generate, 10, out / "gen")
    except Crash:
        barrier()  # the barrier the crashed rank never reached
    except ConfigError as exc:
        report["incomplete_error"] = str(exc)
    barrier()  # rank 0 has read the incomplete folder before rank 1 starts filling it again (no race)
    first_pass = False
    made_before = list(made)
    report["results"] = generate_sharded(generate, 10, out / "gen")
    report["made_in_second_pass"] = made[len(made_before):]
    (out / f"report-rank{info.rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torchrun")
    script = out / "worker.py"
    script.write_text(WORKER)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        str(script),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return out


def _reports(out: Path) -> list[dict]:
    return [json.loads((out / f"report-rank{rank}.json").read_text()) for rank in range(2)]


def _dataset() -> TensorDataset:  # the worker's data set
    g = torch.Generator().manual_seed(11)
    x = torch.randn(48, 4, generator=g)
    return TensorDataset(x, torch.tanh(x @ torch.randn(4, 4, generator=g)))


class _Net(nn.Module):  # the worker's model
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 16), nn.Linear(16, 16)])
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.head(x)


@pytest.fixture(scope="module")
def single_process_reference(tmp_path_factory) -> Path:
    """One process with the doubled batch (8 = 2 ranks x 4) sees the same samples per step."""
    out = tmp_path_factory.mktemp("single")
    torch.manual_seed(0)
    config = TrainConfig(
        steps=6,
        lr=1e-2,
        warmup_steps=2,
        grad_accum=2,
        clip_grad_norm=0.5,
        ema_decay=0.9,
        weight_decay=0.1,
        strategy="none",
        device="cpu",
        out_dir=str(out),
        ckpt_every=3,
        log_every=1,
        progress=False,
        seed=3,
    )
    loader = distributed_loader(_dataset(), batch_size=8, shuffle=True, seed=5, rank=0, world_size=1)
    Trainer(_Net(), lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), loader, config).fit()
    return out / "checkpoints" / "step-00000006"


def _final(folder: Path) -> Path:
    return folder / "checkpoints" / "step-00000006"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_match_one_process_with_the_doubled_batch(
    torchrun_job, single_process_reference, strategy
):
    report = _reports(torchrun_job)[0]
    assert report[strategy] == "ok", report[strategy]
    for name in ("model.safetensors", "ema.safetensors"):
        reference = load_safetensors(single_process_reference / name)
        distributed = load_safetensors(_final(torchrun_job / strategy) / name)
        assert reference.keys() == distributed.keys()
        for key in reference:
            torch.testing.assert_close(
                distributed[key], reference[key], rtol=1e-5, atol=1e-6, msg=f"{name}:{key}"
            )
    losses = [
        json.loads(line)["loss"]
        for line in (torchrun_job / strategy / "metrics.jsonl").read_text().splitlines()
    ]
    reference_losses = [
        json.loads(line)["loss"]
        for line in (single_process_reference.parents[1] / "metrics.jsonl").read_text().splitlines()
    ]
    assert losses == pytest.approx(reference_losses, rel=1e-5)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_distributed_resume_is_exact(torchrun_job, strategy):
    assert _reports(torchrun_job)[0][strategy] == "ok"
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        straight = load_safetensors(_final(torchrun_job / strategy) / name)
        resumed = load_safetensors(_final(torchrun_job / f"{strategy}-resumed") / name)
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name


def test_fsdp2_under_bf16_gathers_bf16_parameters_and_keeps_float32_masters(torchrun_job):
    assert _reports(torchrun_job)[0]["fsdp2-bf16"] == "ok", _reports(torchrun_job)[0]["fsdp2-bf16"]
    full = load_safetensors(_final(torchrun_job / "fsdp2") / "model.safetensors")
    mixed = load_safetensors(_final(torchrun_job / "fsdp2-bf16") / "model.safetensors")
    torch.manual_seed(0)
    initial = _Net().state_dict()
    for key, value in mixed.items():
        assert value.dtype == torch.float32, key  # the master weights (and checkpoints) stay float32
        # trained as far as the float32 run, to bf16 rounding of the steps (lr 1e-2: updates are ~1e-2)
        torch.testing.assert_close(value, full[key], rtol=0, atol=3e-3, msg=key)
        assert not torch.equal(value, initial[key]), key
    assert any(not torch.equal(mixed[k], full[k]) for k in mixed)  # computed in bf16, not float32


def test_wrap_model_refuses_a_param_dtype_without_fsdp2():
    from genloom.core.errors import ConfigError
    from genloom.core.train.distributed import wrap_model

    with pytest.raises(ConfigError, match="fsdp_param_dtype applies to strategy 'fsdp2' only"):
        wrap_model(_Net(), strategy="none", device=torch.device("cpu"), fsdp_param_dtype=torch.bfloat16)


def test_gather_in_order_and_resumable_sharded_generation(torchrun_job):
    reports = _reports(torchrun_job)
    expected = [{"item": i, "square": i * i} for i in range(10)]
    for report in reports:
        assert report["gathered"] == [i * i for i in range(11)]
        assert report["results"] == expected
    assert "item-00000007.json is missing" in reports[0]["incomplete_error"]
    assert reports[0]["made_in_second_pass"] == []  # rank 0 finished its shard (0-4) in the first pass
    assert reports[1]["made_in_second_pass"] == [7, 8, 9]  # rank 1 redoes only what the crash lost


def test_shard_indices_cover_every_item_once():
    for n_items in (0, 1, 7, 10):
        for world in (1, 2, 3, 4):
            shards = [list(shard_indices(n_items, rank, world)) for rank in range(world)]
            assert sum(shards, []) == list(range(n_items))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError):
        shard_indices(5, 2, 2)
    assert gather_in_order([1, 2, 3], n_items=3, rank=0, world=1) == [1, 2, 3]
