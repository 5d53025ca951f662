"""Data-parallel training under torchrun: one process per GPU, or several on a CPU.

torchrun starts the processes and sets RANK, LOCAL_RANK and WORLD_SIZE in their environment.
Each process trains the same networks on its own shard of every epoch's batches, and
DistributedDataParallel averages the gradients, so the networks stay identical. Only rank 0
writes results and logs. Without torchrun every function here does nothing: one process, as before.

A process that fails writes its error into torchrun's key-value store before it exits, so that
rank 0, which torchrun then stops, can report which rank failed and why.
"""

import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

FAILURE_KEY = "generative-models/failure"  # the store key holding the first failing rank's message
STORE_TIMEOUT = timedelta(seconds=10)


def launched_by_torchrun() -> bool:
    """Return True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    """Return True in the process that writes results and logs: rank 0, or the only process."""
    return rank() == 0


def start(device: torch.device) -> None:
    """Join the torchrun process group: NCCL between GPUs, gloo between CPU processes."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    store().set(f"generative-models/pid/{rank()}", f"{os.uname().nodename} {os.getpid()}")


def store() -> dist.Store:
    """Return a client of torchrun's key-value store, at MASTER_ADDR:MASTER_PORT."""
    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=STORE_TIMEOUT)


def wrap(module: nn.Module) -> nn.Module:
    """Return `module` wrapped in DistributedDataParallel when running under torchrun, else `module` itself.

    DistributedDataParallel copies rank 0's parameters and buffers to every rank when it wraps a
    module, averages gradients during backward, and copies rank 0's buffers (batch-norm running
    statistics) to the other ranks at each forward.
    """
    if not dist.is_initialized():
        return module
    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def average(values: torch.Tensor) -> torch.Tensor:
    """Return the mean of `values` over all ranks (a copy); `values` itself without torchrun."""
    if not dist.is_initialized():
        return values
    total = values.clone()
    dist.all_reduce(total)  # gloo does not support ReduceOp.AVG, so sum then divide
    return total / world_size()


def check_replicas_identical(networks: dict[str, nn.Module], epoch: int) -> None:
    """Stop the run when a network's parameters differ between ranks, which data parallelism must never allow."""
    if not dist.is_initialized():
        return
    for name, network in networks.items():
        # A float64 sum and sum of squares per parameter tensor, which nearly any difference in a weight changes.
        local = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().square().sum()]) for p in network.parameters()]).flatten()
        gathered = [torch.empty_like(local) for _ in range(world_size())]
        dist.all_gather(gathered, local)
        for other, values in enumerate(gathered):
            if not torch.equal(values, gathered[0]):
                raise RuntimeError(f"the {name} of rank {other} differs from rank 0's after epoch {epoch}")


def report_failure(message: str) -> None:
    """Record this rank's error in torchrun's store, unless another rank recorded one first."""
    try:
        store().compare_set(FAILURE_KEY, "", f"rank {rank()}: {message}")
    except Exception:  # noqa: BLE001 - the store may be gone when torchrun is stopping; rank 0 then reports what it can
        pass


def report_finished() -> None:
    """Record that this rank trained its last epoch, so that its exit is not taken for a failure."""
    if dist.is_initialized():
        store().set(f"generative-models/finished/{rank()}", "1")


def failure_report() -> str | None:
    """Return the message of the rank that failed first, or a line naming the processes that are gone, or None."""
    try:
        client = store()
        if client.check([FAILURE_KEY]):
            return client.get(FAILURE_KEY).decode()
        host = os.uname().nodename
        stopped_ranks = []
        for other in range(1, int(os.environ.get("WORLD_SIZE", "1"))):
            key = f"generative-models/pid/{other}"
            if not client.check([key]) or client.check([f"generative-models/finished/{other}"]):
                continue
            other_host, pid = client.get(key).decode().split()
            if other_host == host and not process_exists(int(pid)):
                stopped_ranks.append(str(other))
    except Exception:  # noqa: BLE001 - torchrun's store may already be closed
        return None
    if stopped_ranks:
        return f"rank {', '.join(stopped_ranks)} stopped without an error message (killed, or out of memory)"
    return None


def process_exists(pid: int) -> bool:
    """Return True when process `pid` is running: neither gone nor a zombie that torchrun has not reaped yet."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel, which counts a zombie as running
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return status.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # the state follows the parenthesised command name
