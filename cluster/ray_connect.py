"""Join the Ray cluster a command should use.

That is the one already initialised, RAY_ADDRESS's (under `ray job submit`), or a local one this process
starts (and must stop).
"""

import os


def init_ray(*, num_cpus: int | None = None) -> bool:
    """Connect or start; True if this process started a local cluster (`num_cpus` sizes it)."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return False
    # Worker logs (every Serve request is one INFO line) stay in Ray's session log folder.
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True
