"""`sftrl serve`: start Ray and Serve locally and serve a policy over HTTP until Ctrl-C.

    sftrl serve --model smollm2-135m [--checkpoint DIR] [--host 127.0.0.1] [--port 8000]

Prints the URL and a ready-to-run curl. With `SFTRL_API_KEY` set, every route but /healthz needs
`Authorization: Bearer $SFTRL_API_KEY`. Binding a host other than 127.0.0.1 exposes the endpoint.
"""

import json
import shlex
import threading

import typer

from cluster.signals import interrupt_on_signals

CURL_AUTH = ' -H "Authorization: Bearer $SFTRL_API_KEY"'
"""curl's header option carrying the API key from the environment."""


def example_curl(url: str, *, with_key: bool, data: str | None = None) -> str:
    """A curl that asks the served policy one chat question: `data` is curl's -d argument
    (`@file.json` or a JSON body), by default a short "Say hello." request.
    """
    if data is None:
        body = {"model": "policy", "max_tokens": 32, "messages": [{"role": "user", "content": "Say hello."}]}
        data = shlex.quote(json.dumps(body))
    auth = CURL_AUTH if with_key else ""
    return f"curl -s {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} -d {data}"


def serve(
    model: str = typer.Option("smollm2-135m", help="Policy name (smollm2-135m, tiny, tiny-vlm, ...) or HF path."),
    checkpoint: str | None = typer.Option(
        None, help="A save_pretrained directory to serve instead of --model's weights."
    ),
    host: str = typer.Option("127.0.0.1", help="Bind address; 0.0.0.0 exposes the endpoint to the network."),
    port: int = typer.Option(8000, help="HTTP port."),
    replicas: int = typer.Option(1, min=1, help="Number of policy replicas."),
) -> None:
    """Serve a policy over HTTP (OpenAI-compatible chat and token-level generate) until Ctrl-C."""
    import ray
    from ray import serve as ray_serve

    from cluster.policy_service import PolicyService
    from serving.config import ServingConfig

    config = ServingConfig(model=model, checkpoint=checkpoint, host=host, port=port, num_replicas=replicas)
    ray.init(include_dashboard=False)
    interrupt_on_signals()
    try:
        PolicyService.start(config, http=True)
        url = f"http://{host}:{port}"
        typer.echo(
            f"serving {checkpoint or model} at {url} (routes: /v1/chat/completions, /v1/generate, "
            f"/v1/models, /v1/policy, /healthz); Ctrl-C stops"
        )
        typer.echo(example_curl(url, with_key=config.api_key is not None), color=False)
        threading.Event().wait()  # block until Ctrl-C
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        ray_serve.shutdown()
        ray.shutdown()
