"""`sftrl serve`: serve a policy over HTTP from Ray Serve until Ctrl-C or SIGTERM.

    sftrl serve --model smollm2-135m [--checkpoint DIR] [--host 127.0.0.1] [--port 8000] [--replicas 1]
    sftrl serve --model smollm2-135m --num-gpus 1   # on a GPU machine: each replica reserves one GPU
    sftrl serve --model smollm2-135m --engine vllm  # generate with vLLM (continuous batching, prefix cache)

It joins RAY_ADDRESS's cluster or starts a local one (`session.ClusterSession`) and on exit stops
what it started. Prints the URL and a ready-to-run curl. With `SFTRL_API_KEY` set, every route but
/healthz needs `Authorization: Bearer $SFTRL_API_KEY`. Binding a host other than 127.0.0.1 exposes
the endpoint. A replica uses a GPU only when it reserves one (`--num-gpus`; with the default 0 it
runs on the CPU). The options' defaults are `serving.config.ServingConfig`'s.
"""

import json
import shlex
import threading
from typing import Annotated

import typer

from cluster.policy_service import PolicyService
from cluster.session import ClusterSession
from serving.config import ServingConfig

_FIELDS = ServingConfig.model_fields
_MODEL, _CHECKPOINT, _ENGINE, _HOST, _PORT, _REPLICAS, _GPUS = (
    _FIELDS[name] for name in ("model", "checkpoint", "engine", "host", "port", "num_replicas", "num_gpus_per_replica")
)

CURL_AUTH = ' -H "Authorization: Bearer $SFTRL_API_KEY"'
"""curl's header option carrying the API key from the environment."""


def example_curl(url: str, *, with_key: bool, data: str | None = None) -> str:
    """A curl that asks the served policy one chat question.

    `data` is curl's -d argument (`@file.json` or a JSON body), by default a short "Say hello." request.
    """
    if data is None:
        body = {"model": "policy", "max_tokens": 32, "messages": [{"role": "user", "content": "Say hello."}]}
        data = shlex.quote(json.dumps(body))
    auth = CURL_AUTH if with_key else ""
    return f"curl -s {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} -d {data}"


def serve(
    model: Annotated[str, typer.Option(help="Policy name (smollm2-135m, tiny, tiny-vlm, ...) or HF path.")] = (
        _MODEL.default
    ),
    checkpoint: Annotated[
        str | None, typer.Option(help="A save_pretrained directory to serve instead of --model's weights.")
    ] = _CHECKPOINT.default,
    engine: Annotated[_ENGINE.annotation, typer.Option(help=_ENGINE.description)] = _ENGINE.default,
    host: Annotated[str, typer.Option(help=_HOST.description)] = _HOST.default,
    port: Annotated[int, typer.Option(help=_PORT.description)] = _PORT.default,
    replicas: Annotated[int, typer.Option(min=1, help=_REPLICAS.description)] = _REPLICAS.default,
    num_gpus: Annotated[
        float, typer.Option(min=0, help=f"{_GPUS.description} A replica without one runs on the CPU.")
    ] = _GPUS.default,
) -> None:
    """Serve a policy over HTTP (OpenAI-compatible chat and token-level generate) until Ctrl-C."""
    config = ServingConfig(
        model=model,
        checkpoint=checkpoint,
        engine=engine,
        host=host,
        port=port,
        num_replicas=replicas,
        num_gpus_per_replica=num_gpus,
    )
    with ClusterSession() as session:
        try:
            session.started("policy", PolicyService.start(config, http=True))
            url = f"http://{host}:{port}"
            typer.echo(
                f"serving {checkpoint or model} at {url} (routes: /v1/chat/completions, /v1/generate, "
                f"/v1/models, /v1/policy, /openapi.json, /docs, /healthz); Ctrl-C stops"
            )
            typer.echo(example_curl(url, with_key=config.api_key is not None), color=False)
            threading.Event().wait()  # block until Ctrl-C
        except KeyboardInterrupt:
            typer.echo("stopping")
