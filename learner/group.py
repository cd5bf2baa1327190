"""The Ray wrapper: `LearnerGroup` runs n ZeRO-3 ranks as Ray actors in one placement group.

`LearnerRank` is a plain class (one rank: process group + `LearnerEngine`), wrapped by
`ray.remote` only here, where it is launched, so it tests without Ray. `LearnerGroup` reserves a
placement group of `resources_per_rank` bundles, starts one actor per bundle, lets rank 0 pick
MASTER_ADDR/PORT, and joins torch.distributed among them (NCCL on GPUs, gloo on CPU). Callers pass
ONE list of samples; the group shards it across ranks (`learner.batch.shard_for_ranks`).

Given the run directory, the group first checks that every rank sees it: it writes a marker file
with a fresh token there (on the driver) and each rank must read that exact token, else
`learner.run_dir.RunDirNotSharedError` names the rank's node before any model loads. Ranks on
other nodes than the driver's need a directory every node mounts (the PVC in k8s/), or checkpoints
scatter over nodes.

    import ray; ray.init(num_cpus=2)
    group = LearnerGroup(2, LearnerConfig(model="tiny", algo="sft"), resources_per_rank={"CPU": 1}, run_dir="runs/x")
    metrics = group.sft_step(samples)          # {"loss/sft": ..., "perf/tokens_per_s": ...}
    group.begin_rl()                           # fresh optimizer and LR schedule for the RL phase
    path = group.export_weights("runs/x/w.safetensors")  # rank 0 writes the policy's weights (HF names)
    group.save("runs/x/ckpt"); group.load("runs/x/ckpt"); group.shutdown()
"""

from __future__ import annotations

import os
from pathlib import Path

from learner.batch import Sample, shard_for_ranks
from learner.checkpoint import ClientState, load_checkpoint, save_checkpoint
from learner.config import LearnerConfig
from learner.distributed import free_port, init_distributed, node_ip
from learner.engine import LearnerEngine
from learner.export import (
    StreamedWeightsFile,
    export_hf,
    gather_policy_state_dict,
    policy_tensor_specs,
    policy_tensors_to_the_end,
    write_policy_file,
)
from learner.run_dir import (
    RankSighting,
    RunDirMarker,
    RunDirNotSharedError,
    absolute,
    check_run_dir_shared,
    marker_problem,
    write_run_dir_marker,
)
from learner.threads import phase_threads, use_threads
from learner.weight_stream import StreamPlan, open_store, send


class LearnerRank:
    """One learner rank; every method is collective (all ranks call it with their shard)."""

    def __init__(self, rank: int, world_size: int, config: LearnerConfig, *, use_gpu: bool) -> None:
        if not use_gpu:  # a CPU rank on a GPU host must not pick up a GPU (nor NCCL)
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        self.rank, self.world_size, self.config = rank, world_size, config
        self.engine: LearnerEngine | None = None
        self._stream_store = None  # rank 0, between open_weight_stream and stream_weights

    def master_address(self) -> tuple[str, int]:
        """(address, free port) of this rank's host, for MASTER_ADDR/PORT (asked of rank 0)."""
        return node_ip(), free_port()

    def sees_run_dir(self, marker: RunDirMarker) -> RankSighting:
        """Does this rank share the run directory: its node, and why it cannot read `marker` (None: it can)."""
        return RankSighting(node_ip(), marker_problem(marker))

    def setup(self, master_addr: str, master_port: int, *, ranks_on_node: int = 1) -> None:
        """Join the process group and build the engine (loads the model, initialises ZeRO-3).

        The rank runs on `config.torch_threads` threads, else on its share of the node's cores
        among the `ranks_on_node` ranks there (`learner.threads`).
        """
        use_threads(phase_threads(self.config.torch_threads, ranks_on_node))
        init_distributed(self.rank, self.world_size, master_addr=master_addr, master_port=master_port)
        self.engine = LearnerEngine(self.config)

    def sft_step(self, samples: list[Sample]) -> dict[str, float]:
        """`LearnerEngine.sft_step` on this rank's shard."""
        return self.engine.sft_step(samples)

    def rl_step(self, samples: list[Sample]) -> dict[str, float]:
        """`LearnerEngine.rl_step` on this rank's shard."""
        return self.engine.rl_step(samples)

    def values(self, samples: list[Sample]) -> list[float]:
        """`LearnerEngine.values` of this rank's shard."""
        return self.engine.values(samples)

    def num_parameters(self) -> int:
        """The policy's parameter count (`LearnerEngine.n_parameters`)."""
        return self.engine.n_parameters

    def begin_rl(self) -> bool:
        """`LearnerEngine.begin_rl` (False when this rank is already in the RL phase)."""
        return self.engine.begin_rl()

    def node_ip(self) -> str:
        """The address of this rank's node."""
        return node_ip()

    def export_weights(self, path: str) -> str | None:
        """Rank 0 writes the policy's weights (HF names) to the safetensors file `path` and returns it; others None."""
        written = write_policy_file(self.engine.module, path, rank=self.rank)
        return None if written is None else str(written)

    def open_weight_stream(self, *, receivers: int, version: int, bucket_bytes: int, timeout_s: float) -> StreamPlan:
        """Rank 0: host the rendezvous store of a weight sync to `receivers` replicas; returns its plan."""
        address = node_ip()
        self._stream_store = open_store(address, timeout_s=timeout_s)
        return StreamPlan(
            address=address,
            port=self._stream_store.port,
            world_size=receivers + 1,
            version=version,
            tensors=tuple(policy_tensor_specs(self.engine.module)),
            bucket_bytes=bucket_bytes,
            timeout_s=timeout_s,
        )

    def stream_weights(self, plan: StreamPlan, path: str) -> str | None:
        """Broadcast the policy's weights by `plan` (rank 0 sends and writes them to the file `path`); collective.

        Rank 0 returns `path` once every bucket has left; other ranks only join the gathers (None).
        """
        with policy_tensors_to_the_end(self.engine.module, rank=self.rank) as tensors:
            if self.rank != 0:
                return None
            store, self._stream_store = self._stream_store, None
            file = StreamedWeightsFile(path, list(plan.tensors))

            def write(buffer, last: bool) -> None:
                file.write(buffer)
                if last:
                    file.commit()

            try:
                send(plan, tensors, store=store, on_bucket=write)
            except BaseException:
                file.abort()  # a file committed before the failure (the last bucket's) stays
                raise
        return str(file.path)

    def export_hf(self, out_dir: str) -> str | None:
        """Write a HF model directory from rank 0 (see learner.export); returns it on rank 0."""
        state = gather_policy_state_dict(self.engine.module, rank=self.rank)
        if state is None:
            return None
        policy = self.engine.module.policy
        export_hf(
            state,
            out_dir,
            model_config=policy.config,
            generation_config=policy.generation_config,
            tokenizer=self.engine.tokenizer,
            processor=self.engine.processor,
        )
        return out_dir

    def save(self, root: str) -> str:
        """`learner.checkpoint.save_checkpoint` of this rank; returns the tag directory."""
        return save_checkpoint(self.engine, root)

    def load(self, root: str) -> ClientState:
        """`learner.checkpoint.load_checkpoint` of this rank."""
        return load_checkpoint(self.engine, root)


def default_rank_resources() -> dict[str, float]:
    """One CPU per rank, plus one GPU when the Ray cluster has GPUs (ZeRO-3 over NCCL then)."""
    import ray

    if ray.cluster_resources().get("GPU", 0) > 0:
        return {"CPU": 1, "GPU": 1}
    return {"CPU": 1}


class LearnerGroup:
    """n `LearnerRank` actors in a placement group; methods take one batch and shard it.

    `resources_per_rank` is one placement-group bundle per rank, e.g. {"CPU": 1, "GPU": 1,
    "learner": 1} (custom resources advertised by KubeRay worker groups); default:
    `default_rank_resources()`. With `run_dir` (the run directory, where checkpoints and the
    exported policy go) every rank must see the marker the driver writes there, else the group
    releases its actors and raises RunDirNotSharedError before loading the model.
    """

    def __init__(
        self,
        n_ranks: int,
        config: LearnerConfig,
        *,
        resources_per_rank: dict[str, float] | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if n_ranks < 1:
            raise ValueError(f"n_ranks must be >= 1, got {n_ranks}")
        bundle = dict(resources_per_rank or default_rank_resources())
        self.n_ranks, self.config = n_ranks, config
        self._placement = placement_group([bundle] * n_ranks, strategy="PACK")
        ray.get(self._placement.ready())
        custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
        actor = ray.remote(LearnerRank)
        self.actors = [
            actor.options(
                num_cpus=bundle.get("CPU", 0),
                num_gpus=bundle.get("GPU", 0),
                resources=custom,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self._placement, placement_group_bundle_index=rank
                ),
            ).remote(rank, n_ranks, config, use_gpu=bundle.get("GPU", 0) > 0)
            for rank in range(n_ranks)
        ]
        if run_dir is not None:
            self._check_run_dir(write_run_dir_marker(run_dir))
        addresses = ray.get([actor.master_address.remote() for actor in self.actors])
        hosts = [host for host, _ in addresses]
        address, port = addresses[0]  # rank 0's host and a port free on it: MASTER_ADDR/PORT
        ray.get(
            [
                a.setup.remote(address, port, ranks_on_node=hosts.count(host))
                for a, host in zip(self.actors, hosts, strict=True)
            ]
        )

    def _check_run_dir(self, marker: RunDirMarker) -> None:
        """Every rank reads `marker`, or the group shuts down and raises RunDirNotSharedError."""
        import ray

        sightings = ray.get([actor.sees_run_dir.remote(marker) for actor in self.actors])
        try:
            check_run_dir_shared(marker, sightings)
        except RunDirNotSharedError:
            self.shutdown()
            raise

    def _all(self, method: str, *args) -> list:
        """Call `method(*args)` on every rank and wait for all (the calls are collective)."""
        import ray

        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def _sharded(self, method: str, samples: list[Sample], *, per_rank: int = 1) -> list:
        if len(samples) < self.n_ranks * per_rank:
            raise ValueError(
                f"{method} got {len(samples)} samples for {self.n_ranks} ranks: send "
                f"at least {self.n_ranks * per_rank} (n_ranks x mini_batches)"
            )
        import ray

        shards = shard_for_ranks(samples, self.n_ranks)
        refs = [
            getattr(actor, method).remote([samples[i] for i in shard])
            for actor, shard in zip(self.actors, shards, strict=True)
        ]
        return list(zip(shards, ray.get(refs), strict=True))

    def sft_step(self, samples: list[Sample]) -> dict[str, float]:
        """One SFT optimizer step on `samples`; metrics are the whole batch's (rank 0 reports)."""
        return self._sharded("sft_step", samples)[0][1]

    def rl_step(self, samples: list[Sample]) -> dict[str, float]:
        """One PPO/GRPO update (ppo_epochs x mini_batches optimizer steps) on `samples`."""
        return self._sharded("rl_step", samples, per_rank=self.config.mini_batches)[0][1]

    def values(self, samples: list[Sample]) -> list[float]:
        """Value-head estimates, one per sample, in the order given (algo='ppo')."""
        result = [0.0] * len(samples)
        for shard, shard_values in self._sharded("values", samples):
            for index, value in zip(shard, shard_values, strict=True):
                result[index] = value
        return result

    def node_ip(self) -> str:
        """The address of rank 0's node (where it writes weights files and hosts a broadcast)."""
        import ray

        return ray.get(self.actors[0].node_ip.remote())

    def export_weights(self, path: str | Path) -> str:
        """Write the policy's weights (HF names, no value head) to the safetensors file `path`; returns it.

        `path` must be on storage the policy servers read (the run directory, shared across nodes).
        """
        return self._all("export_weights", absolute(path))[0]

    def open_weight_stream(self, receivers: int, version: int, bucket_bytes: int, timeout_s: float) -> StreamPlan:
        """Open a broadcast weight sync of `version` to `receivers` replicas (`learner.weight_stream`); its plan."""
        import ray

        return ray.get(
            self.actors[0].open_weight_stream.remote(
                receivers=receivers, version=version, bucket_bytes=bucket_bytes, timeout_s=timeout_s
            )
        )

    def stream_weights(self, plan: StreamPlan, path: str | Path) -> str:
        """Send the policy's weights by `plan` while the replicas receive them; rank 0 also writes them to `path`.

        Blocks until the last bucket left; returns `path` (on storage every replica reads).
        """
        return self._all("stream_weights", plan, absolute(path))[0]

    def export_hf(self, out_dir: str | Path) -> str:
        """Write a HF model directory (safetensors, config, tokenizer) and return its path."""
        return self._all("export_hf", absolute(out_dir))[0]

    def num_parameters(self) -> int:
        """The policy's parameter count, value head excluded (N of the compute axis, cluster/compute.py)."""
        import ray

        return ray.get(self.actors[0].num_parameters.remote())

    def begin_rl(self) -> bool:
        """Start the RL phase on every rank (fresh optimizer, LR schedule from step 0, KL reference).

        Returns False, changing nothing, when the group is already in it (e.g. resumed from a
        checkpoint saved after the boundary); see `LearnerEngine.begin_rl`.
        """
        return self._all("begin_rl")[0]

    def save(self, root: str | Path) -> str:
        """Checkpoint every rank under `root` (see learner.checkpoint); returns the tag dir.

        `root` must be storage every rank's node can write (the same disk on one machine).
        """
        return self._all("save", absolute(root))[0]

    def load(self, root: str | Path) -> ClientState:
        """Restore the `latest` checkpoint under `root` on every rank (step and phase, as `ClientState`)."""
        return self._all("load", absolute(root))[0]

    def shutdown(self) -> None:
        """Kill the actors and release the placement group."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            ray.kill(actor)
        remove_placement_group(self._placement)
        self.actors = []
