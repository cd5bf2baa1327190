"""Ray state queries for the multinode tests, printed as JSON: run as a script, in a process of its own.

It runs with the cluster's RAY_AUTH_MODE/RAY_AUTH_TOKEN (netns_cluster.cluster_env), which the
state client reads, so the test process never holds another cluster's token.

    python cluster_state.py http://10.77.0.1:8265 nodes               # every node, dead ones too
    python cluster_state.py http://10.77.0.1:8265 actors              # every actor, with node_id and state
    python cluster_state.py http://10.77.0.1:8265 wait-task NAME 600  # until a task NAME runs; prints it
"""

from __future__ import annotations

import json
import sys
import time

from ray.util.state import list_actors, list_nodes, list_tasks

LIMIT = 10_000
POLL_S = 0.5


def records(items: list) -> list[dict]:
    """State API records as plain dicts."""
    return [item if isinstance(item, dict) else item.__dict__ for item in items]


def wait_task(address: str, name: str, timeout_s: float) -> dict:
    """The first RUNNING task called `name`, polling every POLL_S; TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = list_tasks(
            address=address, filters=[("name", "=", name), ("state", "=", "RUNNING")], limit=LIMIT, detail=True
        )
        if running:
            return records(running)[0]
        time.sleep(POLL_S)
    raise TimeoutError(f"no task {name!r} ran within {timeout_s:g} s")


def main(argv: list[str]) -> None:
    """Print the JSON answer of one query (see the module docstring)."""
    address, query, *args = argv
    if query == "nodes":
        answer = records(list_nodes(address=address, limit=LIMIT, detail=True))
    elif query == "actors":
        answer = records(list_actors(address=address, limit=LIMIT, detail=True))
    elif query == "wait-task":
        answer = wait_task(address, args[0], float(args[1]))
    else:
        raise SystemExit(f"unknown query {query!r}; use nodes, actors or wait-task NAME TIMEOUT_S")
    print(json.dumps(answer, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
