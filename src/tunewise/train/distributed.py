"""Data-parallel training over several processes with PyTorch's own ``torch.distributed`` (DDP).

Two halves:

- inside a run (``Group``): ``train`` finds the process group from the variables that ``torchrun`` (and
  ``accelerate launch``, and ``launch`` below) set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``), joins it (``gloo`` on CPU, ``nccl`` on CUDA) with a timeout on every collective, and each rank
  trains its share of every global batch through a ``DistributedDataParallel`` wrapper that averages gradients;
- the launcher (``launch``): ``tunewise train --nproc-per-node N`` starts N workers on this machine with
  torchrun's own machinery (``torch.distributed.launcher``), on 127.0.0.1, and turns a failed worker into one
  error that names its rank.

The global batch, the learning-rate schedule and the metrics are those of one process: the step plan does not
depend on the number of processes, each rank's loss is scaled so that the averaged gradient is the gradient of the
whole batch's mean token loss, and the metrics are summed over ranks before they are written.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from tunewise.errors import DistributedError, UsageError

DEFAULT_TIMEOUT_S = 300.0
ENV_NPROC = "TUNEWISE_NPROC_PER_NODE"  # set by ``launch`` for its workers: the resume command names it


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number.",
                         hint="Launch with torchrun, accelerate launch or tunewise train --nproc-per-node N.") from None


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def is_distributed_env() -> bool:
    """True inside a worker of a multi-process launch (or a process group someone else started)."""
    import torch.distributed as dist

    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1) or world_size_from_env() > 1


@dataclass
class Group:
    """This process's place in the run: rank, world size, device, and the collectives the trainer needs."""

    rank: int
    world: int
    local_rank: int
    device: str
    timeout_s: float
    owned: bool  # this process group was started here, so it is destroyed here
    sharding: str = "ddp"  # ddp: every rank holds the whole model; fsdp: parameters, gradients, optimizer sharded

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any."""
        return self.all_sum([1.0 if flag else 0.0])[0] > 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.device.startswith("cuda"):
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            dist.destroy_process_group()

    def _comm_device(self) -> str:
        return self.device if self.device.startswith("cuda") else "cpu"


def join(device: str, timeout_s: float, sharding: str = "ddp") -> Group:
    """Join (or start) the process group of this run. ``device`` is ``cpu`` or ``cuda``; on CUDA each rank takes
    the GPU of its local rank. Every collective fails after ``timeout_s`` instead of waiting for ever."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedError("This PyTorch build has no torch.distributed; multi-process training needs it.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"rank {rank_from_env()} has local rank {local_rank}, but this machine shows "
                f"{torch.cuda.device_count()} CUDA GPUs.", hint="Start at most one process per GPU.")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    owned = False
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if name not in os.environ:
                raise UsageError(f"WORLD_SIZE is set but {name} is not: this is not a complete torchrun launch.",
                                 hint="Use `tunewise train --nproc-per-node N` or `torchrun --nproc-per-node N -m "
                                      "tunewise.train ...`.")
        backend = "nccl" if device.startswith("cuda") else "gloo"
        kwargs: dict[str, Any] = {}
        if backend == "nccl":
            kwargs["device_id"] = torch.device(device)
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
        except (dist.DistError, RuntimeError, ValueError) as exc:
            raise DistributedError(
                f"rank {rank_from_env()} could not join the process group at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}: {_first_line(exc)}",
                hint="Check that every process was started by the same launch and that the master address is "
                     "reachable.") from exc
        owned = True
    return Group(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device,
                 timeout_s=timeout_s, owned=owned, sharding=sharding)


def is_collective_failure(exc: BaseException) -> bool:
    """An error that says another process went away or stalled (as opposed to a fault of this one)."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout",
                                  "broken pipe", "peer"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def collective_error(group: Group, exc: BaseException, step: int, saved_step: int, out) -> DistributedError:
    return DistributedError(
        f"rank {group.rank} of {group.world}: a collective operation failed in step {step} "
        f"({_first_line(exc)}); another process died or stalled for more than {group.timeout_s:g} s.",
        hint=(f"The state saved at step {saved_step} in {out} resumes: run the same command again." if saved_step
              else "No state was saved yet: the same command starts the run again."),
        code="rank_failed")


# ---------------------------------------------------------------------------------------------------- the model


def labelled_module(model, core, head):
    """A module whose forward is the trainer's: logits at labelled positions only. DDP wraps this module, so its
    hooks see every parameter that the loss uses (calling ``core`` and ``head`` directly would bypass them)."""
    import torch

    class Labelled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids, keep, **extra):
            if core is not None:
                from tunewise.train.methods.sft import head_float32

                hidden = core(input_ids=ids, use_cache=False, **extra).last_hidden_state
                return head_float32(head, hidden[:, :-1][keep])
            return self.model(input_ids=ids, use_cache=False, **extra).logits[:, :-1][keep]

    return Labelled()


def wrap(module, group: Group):
    from torch.nn.parallel import DistributedDataParallel

    ids = [group.local_rank] if group.device.startswith("cuda") else None
    # Every trainable parameter gets a gradient in every step (a rank without examples runs a zero-weighted one).
    return DistributedDataParallel(module, device_ids=ids)


def shard(module, core, group: Group):
    """FSDP (PyTorch's ``fully_shard``): each decoder layer is a unit of its own, the rest (embeddings, final norm,
    the tied LM head) belongs to the root. Gradients are averaged over ranks like DDP's."""
    from torch.distributed.fsdp import fully_shard

    for layer in getattr(core, "layers", None) or []:
        fully_shard(layer)
    fully_shard(module)
    return module


def full_state(model, optimizer=None):
    """The full (unsharded) weights on CPU, and the optimizer state by parameter name: collective, every rank
    calls it. Tensors are complete on every rank; rank 0 writes them."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    # A tied weight (the LM head that is the embedding) comes back under both names, as two copies: keep the first
    # name only, as the model's own save does.
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            weights.pop(name, None)
        seen.add(id(param))
    return weights, (get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None)


def load_optimizer(model, optimizer, state) -> None:
    """A full optimizer state by parameter name (``full_state``) into a sharded optimizer: each rank keeps its
    shards, so a run saved by N processes resumes on any number."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def share(indices: list[int], lengths: list[int], rank: int, world: int) -> list[int]:
    """This rank's examples of one global batch: longest first, dealt round-robin, so tokens are balanced."""
    ordered = sorted(indices, key=lambda i: (-lengths[i], i))
    return ordered[rank::world]


def sync_points(n: int, wrapped) -> list[Any]:
    """A context per micro-batch that synchronises gradients on the last one only (DDP's ``no_sync``, FSDP's
    ``set_requires_gradient_sync``), so every rank reduces once per step."""
    if hasattr(wrapped, "set_requires_gradient_sync"):
        return [_fsdp_sync(wrapped, k == n - 1) for k in range(n)]
    return [wrapped.no_sync() if k < n - 1 else contextlib.nullcontext() for k in range(n)]


@contextlib.contextmanager
def _fsdp_sync(module, sync: bool):
    module.set_requires_gradient_sync(sync)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


# ---------------------------------------------------------------------------------------------------- the launcher


def _loopback_interface() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    for name in ("lo", "lo0"):
        if name in names:
            return name
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(rank: int, failure) -> str:
    if failure.exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-failure.exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-failure.exitcode}"
    else:
        how = f"exited with code {failure.exitcode}"
    return f"rank {rank} (pid {failure.pid}) {how}"


def launch(worker_args: list[str], nproc: int, output_dir: str, timeout_s: float) -> int:
    """Run ``python -m tunewise.train WORKER_ARGS`` in ``nproc`` processes on this machine (rendezvous on
    127.0.0.1) and wait for them. Returns the exit code for the command; a worker that died or failed is raised
    as a ``DistributedError`` naming its rank, unless rank 0 already reported its own error (then its exit code is
    returned)."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # Workers inherit this environment (restored afterwards): one thread each unless asked, loopback only.
    saved_env = dict(os.environ)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ[ENV_NPROC] = str(nproc)
    lo = _loopback_interface()
    if lo:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}", rdzv_configs={"timeout": int(max(60, timeout_s))},
        max_restarts=0, monitor_interval=0.1, local_addr="127.0.0.1", logs_specs=DefaultLogsSpecs(),
        shutdown_timeout=15)
    try:
        elastic_launch(config, sys.executable)("-m", "tunewise.train", *worker_args)
    except ChildFailedError as exc:
        failures = exc.failures
        hint = f"Training again with the same command resumes from the last state saved in {output_dir}."
        signalled = {r: f for r, f in failures.items() if f.exitcode < 0}
        # SIGTERM is also how the launcher stops the survivors: another signal names the cause first.
        cause = {r: f for r, f in signalled.items() if -f.exitcode != signal.SIGTERM}
        if not cause and 0 in failures and failures[0].exitcode >= 0:
            return failures[0].exitcode  # rank 0 has printed its own error
        cause = cause or signalled or dict([min(failures.items())])
        who = "; ".join(_describe(r, f) for r, f in sorted(cause.items()))
        above = "" if signalled else "; its error is above"
        raise DistributedError(f"{who}{above}. The other processes were stopped.", hint=hint,
                               code="rank_failed") from None
    except SignalException:
        return 130  # Ctrl-C: the workers got it too, saved their state and printed how to resume
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return 0
