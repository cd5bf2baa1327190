"""The Ray Serve policy endpoint: deployment `PolicyServer` with a FastAPI ingress.

HTTP routes (every one but /healthz needs `Authorization: Bearer $SFTRL_API_KEY` when a key is set):
    POST /v1/generate            token-level generate (prompt/output ids, log-probs, policy_version)
    POST /v1/chat/completions    OpenAI-compatible (image_url data URLs, n, logprobs, usage)
    GET  /v1/models              OpenAI model list
    GET  /v1/policy              model, version, device, replica, batching counters
    GET  /openapi.json           the OpenAPI document (request and response schemas, error replies)
    GET  /docs                   Swagger UI on that document
    GET  /healthz                liveness, no auth
Handle methods (in-cluster callers; never exposed over HTTP):
    await handle.generate.remote(request: dict) -> dict        same body/reply as /v1/generate
    handle.broadcast("load_weights", path_or_ref, version)     atomic, versions only go up
    handle.broadcast("receive_weights", plan, path, version)   the same, from a learner's weight broadcast

The newest published weights live in a `WeightRegistry` deployment-scoped actor (see
`serving/weights.py`); a replica loads them in its constructor, before Serve sends it traffic.

    serve run serving.app:app                           # smollm2-135m, defaults
    serve run serving.app:app_builder model=tiny num_replicas=2
    sftrl serve --model smollm2-135m                    # the same, plus Ray start-up
"""

import asyncio
import copy
import hmac
import logging
import os

import psutil
import ray
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig, DeploymentActorConfig

from learner.threads import phase_threads, use_threads
from learner.weight_stream import StreamPlan
from serving.config import ServingConfig, hide_unreserved_gpus
from serving.limits import RequestError, check_at_most
from serving.memory import release_freed_memory
from serving.openai_compat import chat_response, chat_to_generate
from serving.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelCard,
    ModelList,
    PolicyInfo,
    ValidationErrorResponse,
)
from serving.weights import SwapResult, WeightRegistry

logger = logging.getLogger("ray.serve")
DEPLOYMENT_NAME = "PolicyServer"
REGISTRY_ACTOR = "weights"
REGISTRY_TIMEOUT_S = 5.0
HEAD_NODE_RESOURCE = "node:__internal_head__"  # what Ray's head node advertises (ray._common.constants)
CONTROL_SLOTS = 16  # requests a replica accepts beyond the generate queue (health, info, swaps)

# FastAPI's own /docs and /openapi.json would be routes outside the API key's reach: PolicyServer
# serves both itself, behind the key (see `openapi_document`); there is no /redoc.
api = FastAPI(title="sftrl policy endpoint", docs_url=None, redoc_url=None, openapi_url=None)
REQUEST_MODELS = (GenerateRequest, ChatCompletionRequest)  # bodies the routes parse themselves, after the byte limit
ERROR_REPLIES = {
    400: "A value over a limit of the server or the model; `error.code` names the limit.",
    401: "Missing or wrong API key (only when SFTRL_API_KEY is set): send `Authorization: Bearer <key>`.",
    413: "Request body over `max_request_bytes`, or an image over its byte or pixel limit.",
    422: "Malformed JSON, or a body that does not match the request schema; `detail` lists the problems.",
    503: "The replica's queue is full; retry after `Retry-After` seconds.",
}


def _errors(*statuses: int) -> dict:
    """FastAPI `responses=` for the error replies a route sends (bodies of `RequestError.body()`)."""
    responses = {}
    for status in statuses:
        model = ValidationErrorResponse if status == 422 else ErrorResponse
        responses[status] = {"model": model, "description": ERROR_REPLIES[status]}
        if status == 503:
            responses[status]["headers"] = {"Retry-After": {"description": "Seconds.", "schema": {"type": "integer"}}}
    return responses


def _json_body(model: type[BaseModel]) -> dict:
    """FastAPI `openapi_extra` publishing `model` as the JSON body of a route that reads the raw body."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _body_route(path: str, body: type[BaseModel], reply: type[BaseModel]):
    """`api.post` for a route that reads its raw body (byte limit first) as `body` and replies `reply`.

    The published document shows both models and every error such a route can send.
    """
    return api.post(
        path, response_model=reply, responses=_errors(400, 401, 413, 422, 503), openapi_extra=_json_body(body)
    )


def openapi_document(*, secured: bool, root_path: str) -> dict:
    """The endpoint's OpenAPI document, as served by `GET /openapi.json`.

    FastAPI's document of the routes, plus the schemas of `REQUEST_MODELS` (which the routes'
    `_json_body` refers to), the bearer key on every route but /healthz when `secured`, and
    `root_path` (the application's route prefix) as the server URL.
    """
    document = copy.deepcopy(api.openapi())
    _, definitions = models_json_schema(
        [(model, "validation") for model in REQUEST_MODELS], ref_template="#/components/schemas/{model}"
    )
    document["components"]["schemas"].update(definitions["$defs"])
    if secured:
        document["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"apiKey": []}]
        document["paths"]["/healthz"]["get"]["security"] = []
    if root_path.rstrip("/"):
        document["servers"] = [{"url": root_path.rstrip("/")}]
    return document


@api.exception_handler(RequestError)
async def _request_error(_: Request, error: RequestError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _validation_message(error: ValidationError) -> str:
    problems = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:5]]
    return "invalid request: " + "; ".join(problems)


@api.exception_handler(ValidationError)
async def _validation_error(_: Request, error: ValidationError) -> JSONResponse:
    body = ValidationErrorResponse(
        **RequestError(422, _validation_message(error), "validation").body(),
        detail=error.errors(include_url=False, include_context=False, include_input=False),
    )
    return JSONResponse(body.model_dump(), status_code=422)


def _registry():
    """The deployment's registry actor, resolved on each use (the controller may recreate it)."""
    return serve.get_deployment_actor(REGISTRY_ACTOR)


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class PolicyServer:
    """One replica: loads the policy, then the newest published weights, then serves."""

    async def __init__(self, config: ServingConfig):
        # The GPUs Ray gave this replica (build_app's num_gpus_per_replica, or a RayService's
        # ray_actor_options override): with none, CUDA is hidden before torch first queries it.
        reserved_gpus = len(ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
        hide_unreserved_gpus(reserved_gpus)
        from serving.runtime import start_runtime  # imports torch: after CUDA is hidden

        use_threads(phase_threads(config.torch_threads, config.num_replicas))
        self.config = config
        self.model_name = config.model
        self.device = config.resolved_device(reserved_gpus=reserved_gpus)
        self.runtime = await start_runtime(config, device=self.device)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._repair: asyncio.Task | None = None
        version, weights = await _registry().latest.remote()
        if weights is not None:  # a later replica (restart, scale-up): catch up before taking traffic
            await self.runtime.engine.load_weights(weights, version)

    def __del__(self):
        """Serve's shutdown hook: stop the engine (vLLM's processes)."""
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.engine.shutdown()

    # ------------------------------------------------------------------ handle methods
    async def generate(self, request: dict) -> dict:
        """Handle contract: `request` as the `/v1/generate` body; returns its reply as a dict."""
        try:
            parsed = GenerateRequest.model_validate(request)
        except ValidationError as error:  # pydantic errors do not pickle through Ray; send a RequestError
            raise RequestError(422, _validation_message(error), "validation") from None
        return (await self.runtime.generate(parsed)).model_dump()

    async def load_weights(self, weights, version: int) -> dict:
        """Swap to `weights` as `version`; publish it for later replicas.

        `weights`: the path of a safetensors file this replica can read (a training run's sync:
        `cluster/weight_files.py`), a state dict, or an ObjectRef of either. Called on every replica
        by `handle.broadcast("load_weights", weights, version)`. Raises StaleVersionError for an
        older version. The first replica to claim a new version hands the weights (a path: just
        where to get them) to the registry before returning, so when the broadcast has returned, a
        replica that starts afterwards loads this version.
        """
        if isinstance(weights, ray.ObjectRef):
            weights = await weights
        result = await self.runtime.engine.load_weights(weights, version)
        await self._publish(result, weights)
        del weights  # the state dict copy is no longer needed: hand its memory back
        await asyncio.to_thread(release_freed_memory)
        return self._swap_report(result)

    async def receive_weights(self, plan: StreamPlan, path: str, version: int) -> dict:
        """Swap to the weights a training run broadcasts by `plan` (`learner.weight_stream`) as `version`.

        Called on every replica by `handle.broadcast("receive_weights", plan, path, version)` while
        learner rank 0 sends; `path` is the safetensors file the learner writes the same weights to
        (whole before the stream ends), which the registry then keeps for replicas that start later.
        """
        result = await self.runtime.engine.receive_weights(plan, version, address=self.node_ip(), path=path)
        await self._publish(result, path)
        return self._swap_report(result)

    def node_ip(self) -> str:
        """This replica's node address (`handle.broadcast("node_ip")` lists those a broadcast reaches)."""
        return ray.util.get_node_ip_address()

    async def _publish(self, result: SwapResult, weights) -> None:
        """The first replica to swap to a new version hands it to the registry (for replicas that start later)."""
        registry = _registry()
        if result.swapped and await registry.claim.remote(result.version):
            await registry.publish.remote(result.version, weights)

    def _swap_report(self, result: SwapResult) -> dict:
        return {
            "replica": self.replica,
            "version": self.runtime.engine.version,
            "swapped": result.swapped,
            "seconds": result.seconds,
            "bytes": result.bytes,
        }

    async def check_health(self) -> None:
        """Serve's periodic health check: raises once the engine died; repairs a registry behind this replica.

        The controller recreates a dead registry actor empty (and a replica that claimed a version
        may die before publishing it); a replica whose health check sees the registry behind
        republishes its own weights in the background, so replicas that start afterwards still
        load the newest version. The check itself never waits for the repair nor fails on it.
        """
        self.runtime.engine.check_health()
        if self.runtime.engine.version == 0 or (self._repair is not None and not self._repair.done()):
            return
        try:
            registry = _registry()
            published = await asyncio.wait_for(registry.version.remote(), REGISTRY_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 (a registry being recreated: try again next period)
            logger.warning("weight registry unreachable from the health check: %r", error)
            return
        if published < self.runtime.engine.version:
            self._repair = asyncio.create_task(self._republish(registry))

    async def _republish(self, registry) -> None:
        """Publish this replica's weights (the registry keeps them only if still newer than its own)."""
        try:
            version, weights = await self.runtime.engine.snapshot()  # waits for running requests
            await registry.publish.remote(version, weights)
            logger.warning("weight registry was behind; republished version %d", version)
        except Exception as error:  # noqa: BLE001 (the next health check tries again)
            logger.warning("republishing weights to the registry failed: %r", error)

    def info(self) -> dict:
        """What this replica serves (`GET /v1/policy`; `handle.broadcast("info")` lists every replica)."""
        engine, stats = self.runtime.engine, self.runtime.engine.stats
        replica = psutil.Process()
        memory = [p.memory_full_info() for p in [replica, *replica.children(recursive=True)]]  # vLLM's engine processes
        return PolicyInfo(
            model=self.model_name,
            engine=engine.name,
            version=engine.version,
            device=self.device,
            replica=self.replica,
            is_vlm=self.runtime.codec.is_vlm,
            batches=stats.batches,
            requests=stats.requests,
            largest_batch=stats.largest_batch,
            rss_mb=sum(m.rss for m in memory) / 2**20,
            private_mb=sum(m.uss for m in memory) / 2**20,
        ).model_dump()

    # ------------------------------------------------------------------ HTTP routes
    def _authorize(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key.get_secret_value()}".encode()):
            raise RequestError(
                401, "missing or wrong API key: send `Authorization: Bearer <SFTRL_API_KEY>`", "unauthorized"
            )

    async def _body(self, request: Request, model: type[BaseModel]) -> BaseModel:
        body = await request.body()
        check_at_most(
            len(body),
            self.config.limits.max_request_bytes,
            what="request body bytes",
            code="max_request_bytes",
            status=413,
        )
        return model.model_validate_json(body)

    @api.get("/openapi.json", include_in_schema=False)
    async def http_openapi(self, request: Request) -> JSONResponse:
        """`GET /openapi.json`: the OpenAPI document (see `openapi_document`)."""
        self._authorize(request)
        return JSONResponse(self._openapi_document(request))

    @api.get("/docs", include_in_schema=False)
    async def http_docs(self, request: Request) -> HTMLResponse:
        """`GET /docs`: Swagger UI with the document inlined (its own fetch of /openapi.json would carry no key)."""
        self._authorize(request)
        return get_swagger_ui_html(
            openapi_url="", title=f"{api.title} - docs", swagger_ui_parameters={"spec": self._openapi_document(request)}
        )

    def _openapi_document(self, request: Request) -> dict:
        return openapi_document(secured=self.config.api_key is not None, root_path=request.scope.get("root_path", ""))

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: answers without the API key while the replica's event loop runs."""
        return {"status": "ok"}

    @_body_route("/v1/generate", GenerateRequest, GenerateResponse)
    async def http_generate(self, request: Request) -> JSONResponse:
        """`POST /v1/generate`: token in, token out (GenerateRequest -> GenerateResponse)."""
        self._authorize(request)
        parsed = await self._body(request, GenerateRequest)
        return JSONResponse((await self.runtime.generate(parsed)).model_dump())

    @_body_route("/v1/chat/completions", ChatCompletionRequest, ChatCompletionResponse)
    async def chat_completions(self, request: Request) -> JSONResponse:
        """`POST /v1/chat/completions`: OpenAI-compatible chat on top of the generate path."""
        self._authorize(request)
        chat = await self._body(request, ChatCompletionRequest)
        check_at_most(chat.n, self.config.limits.max_n, what="n", code="max_n")
        replies = await self.runtime.generate_many(chat_to_generate(chat), n=chat.n)
        response = chat_response(chat, replies, model=self.model_name, tokenizer=self.runtime.codec.tokenizer)
        return JSONResponse(response.model_dump())

    @api.get("/v1/models", response_model=ModelList, responses=_errors(401))
    async def models(self, request: Request) -> JSONResponse:
        """`GET /v1/models`: the OpenAI model list (one model: the served policy)."""
        self._authorize(request)
        return JSONResponse(ModelList(data=[ModelCard(id=self.model_name, created=0)]).model_dump())

    @api.get("/v1/policy", response_model=PolicyInfo, responses=_errors(401))
    async def policy(self, request: Request) -> JSONResponse:
        """`GET /v1/policy`: what this replica serves (see `info`)."""
        self._authorize(request)
        return JSONResponse(self.info())


def build_app(config: ServingConfig) -> Application:
    """The Serve application for `config` (bind it with `serve.run(build_app(cfg), name=cfg.app_name)`)."""
    deployment = PolicyServer.options(
        num_replicas=config.num_replicas,
        ray_actor_options={
            "num_cpus": config.num_cpus_per_replica,
            "num_gpus": config.num_gpus_per_replica,
            "resources": config.resources_per_replica,
        },
        max_ongoing_requests=config.limits.max_queued_requests + CONTROL_SLOTS,
        max_queued_requests=config.limits.caller_max_queued_requests,
        backpressure_config=BackpressureConfig(retry_after_s=config.limits.retry_after_s),
        deployment_actors=[
            DeploymentActorConfig(
                name=REGISTRY_ACTOR,
                actor_class=ray.remote(WeightRegistry),
                # on the head node: a registry lost with a policy node would come back empty, and the
                # replicas that replace that node's would serve the base weights
                actor_options={"num_cpus": 0, "resources": {HEAD_NODE_RESOURCE: 0.001}},
            )
        ],
    )
    return deployment.bind(config)


def app_builder(args: dict[str, str]) -> Application:
    """Serve application builder: `serve run serving.app:app_builder model=tiny num_replicas=2`."""
    return build_app(ServingConfig(**args))


app = build_app(ServingConfig(model=os.environ.get("SFTRL_MODEL", "smollm2-135m")))
