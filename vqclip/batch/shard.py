"""Disjoint, deterministic shares of a batch: from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) or --shard i/n."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence, TypeVar

from ..errors import bad_arg

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share: jobs whose plan index ≡ `index` (mod `count`); `local_rank` picks its GPU."""

    index: int = 0
    count: int = 1
    local_rank: int | None = None
    source: str = "single"  # single | torchrun | --shard

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`"i/n"` with 0 <= i < n -> Shard."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise bad_arg("--shard", "must read i/n (this process's share i of n, counting from 0)", text,
                      "Write e.g. --shard 0/4 on the first of four machines.")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or index >= count:
        raise bad_arg("--shard", "needs n >= 1 and 0 <= i < n", text, f"Use one of 0/{max(count, 1)} .. "
                      f"{max(count, 1) - 1}/{max(count, 1)}.")
    return Shard(index, count, None, "--shard")


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The torchrun share (RANK of WORLD_SIZE, GPU LOCAL_RANK), or None outside torchrun."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None
    try:
        rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
        local = int(env["LOCAL_RANK"]) if env.get("LOCAL_RANK", "") != "" else None
    except ValueError:
        raise bad_arg("RANK/WORLD_SIZE/LOCAL_RANK", "must be whole numbers (torchrun sets them)",
                      {k: env.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
                      "Launch with torchrun, or unset them and use --shard i/n.") from None
    if world < 1 or not 0 <= rank < world:
        raise bad_arg("RANK/WORLD_SIZE", "need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE",
                      f"RANK={rank} WORLD_SIZE={world}", "Launch with torchrun, or unset them and use --shard i/n.")
    return Shard(rank, world, local, "torchrun")


def resolve_shard(flag: str | None, env: Mapping[str, str] | None = None) -> Shard:
    """--shard, else torchrun's environment, else the whole batch; both must agree when both are given."""
    from_env = shard_from_env(env)
    if flag is None:
        return from_env or Shard()
    from_flag = parse_shard(flag)
    if from_env is not None and from_env.count > 1 and (from_env.index, from_env.count) != (from_flag.index,
                                                                                           from_flag.count):
        raise bad_arg("--shard", f"disagrees with torchrun's RANK/WORLD_SIZE ({from_env})", flag,
                      "Under torchrun leave --shard out: each process takes its share by rank.")
    return from_flag if from_env is None else Shard(from_flag.index, from_flag.count, from_env.local_rank, "--shard")


def shard_jobs(jobs: Sequence[T], shard: Shard) -> list[T]:
    """Round-robin by plan index: every job in exactly one share, shares differ in size by at most one."""
    return [job for i, job in enumerate(jobs) if i % shard.count == shard.index]
