"""A vLLM-compatible HTTP server for tests: no model, no GPU, vLLM's wire format.

vLLM cannot run on the CI machines (no GPU), so costguard's live backends are tested against
this double. It serves the routes, payloads, usage fields, readiness behaviour and Prometheus
metric names of ``vllm serve`` (pinned to vLLM 0.33):

* ``POST /v1/chat/completions`` and ``POST /v1/completions`` — plain JSON or SSE
  (``data: {...}`` chunks, ``data: [DONE]``; with ``stream_options.include_usage`` a final chunk
  with ``"choices": []`` and ``usage``).
* ``GET /v1/models``, ``POST /tokenize``, ``GET /health``, ``GET /metrics``, ``GET /version``.

Usage follows vLLM: ``prompt_tokens`` INCLUDES cached tokens; ``prompt_tokens_details``
(``{"cached_tokens": N}``) is present only when the server runs with
``enable_prompt_tokens_details=True`` and N > 0. A reply that ends naturally (finish_reason
``stop``) counts one more completion token than its text has: the EOS token, as in vLLM.

Token counting uses :class:`FakeTokenizer` (a documented regex tokenizer and a tiny chat
template, see there), so ``/tokenize`` agrees with ``usage.prompt_tokens`` exactly.

Automatic prefix caching is simulated (:class:`PrefixCacheSim`): block size 16, full blocks
only, chained block keys, lookup stops at the first miss, hits capped at N-1 tokens rounded down
to whole blocks, LRU eviction when ``num_gpu_blocks`` is given (unlimited otherwise), generated
tokens fill blocks too.

Use it in-process::

    with FakeVLLM("Qwen/Qwen2.5-7B-Instruct").start_in_thread() as server:
        requests.post(server.base_url + "/v1/chat/completions", json=...)

or in the foreground: ``python -m tests.doubles.fake_vllm --model NAME --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import zlib
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

DEFAULT_VERSION = "0.33.0"
MAX_BODY_BYTES = 64 * 1024 * 1024

# Bucket boundaries copied from vllm/v1/metrics/loggers.py so histograms look the same.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

FINISH_REASONS = ("stop", "length", "abort")

# Words for the default generated reply; each is exactly one token of FakeTokenizer.
_WORDS = (
    "the", "answer", "depends", "on", "context", "and", "careful", "review", "of", "each",
    "request", "shows", "that", "tokens", "cost", "money", "while", "cache", "hits", "save",
    "time", "so", "route", "small", "models", "first", "then", "escalate", "when", "needed",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class FakeTokenizer:
    """Deterministic stand-in for a model tokenizer plus its chat template.

    * Chat rendering (what vLLM does with the model's jinja2 template): every message becomes
      ``"<|{role}|>\\n{content}\\n"``; with ``add_generation_prompt`` (vLLM's default) the
      text ends with ``"<|assistant|>\\n"``. List contents keep their ``text`` parts, joined by
      ``"\\n"``. No special tokens are added (vLLM tokenizes chat with add_special_tokens=False).
    * Tokens are the matches of the regex ``\\w+|[^\\w\\s]``: a run of word characters, or one
      other non-space character; whitespace is dropped. ``"<|user|>"`` is 5 tokens.
    * Token ids are ``crc32(piece) % 151643``: stable across processes, not invertible.
    """

    PIECE_RE = re.compile(r"\w+|[^\w\s]")
    VOCAB_SIZE = 151_643
    GENERATION_PROMPT = "<|assistant|>\n"

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    @staticmethod
    def content_text(content: Any) -> str:
        """The text of a message's ``content`` (string, null, or a list of parts)."""
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif isinstance(part, str):
                    parts.append(part)
            return "\n".join(parts)
        raise ValueError("message content must be a string, null or a list of parts")

    @staticmethod
    def tool_dicts(tools: Any) -> list[dict[str, Any]]:
        """vLLM's `[tool.model_dump() for tool in request.tools]`: unset description and
        parameters are present as None, `strict` only when set."""
        if not isinstance(tools, list):
            raise ValueError("'tools' must be a list")
        out = []
        for tool in tools:
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise ValueError("each tool needs a function with a name")
            dumped = {
                "name": function["name"],
                "description": function.get("description"),
                "parameters": function.get("parameters"),
            }
            if function.get("strict") is not None:
                dumped["strict"] = function["strict"]
            out.append({"type": "function", "function": dumped})
        return out

    @staticmethod
    def call_arguments(arguments: Any) -> dict[str, Any]:
        """vLLM parses a tool call's JSON `arguments`; empty or malformed ones become {}."""
        if isinstance(arguments, dict):
            return arguments
        try:
            parsed = json.loads(arguments) if arguments else {}
        except (TypeError, ValueError):
            parsed = {}
        return parsed if isinstance(parsed, dict) else {}

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Any = None,
    ) -> str:
        """With tools: a ``"<|tools|>\\n{json}\\n"`` block first; an assistant's tool calls follow
        its content as ``"<|tool_call|>\\n{json}\\n"`` each (name and parsed arguments)."""
        chunks = []
        if tools is not None:
            chunks.append(f"<|tools|>\n{json.dumps(self.tool_dicts(tools))}\n")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ValueError("each message needs a string 'role'")
            chunks.append(f"<|{message['role']}|>\n{self.content_text(message.get('content'))}\n")
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                payload = {
                    "name": function.get("name"),
                    "arguments": self.call_arguments(function.get("arguments")),
                }
                chunks.append(f"<|tool_call|>\n{json.dumps(payload)}\n")
        if add_generation_prompt:
            chunks.append(self.GENERATION_PROMPT)
        return "".join(chunks)

    def pieces(self, text: str) -> list[str]:
        return self.PIECE_RE.findall(text)

    def count(self, text: str) -> int:
        return len(self.PIECE_RE.findall(text))

    def ids(self, pieces: Iterable[str]) -> list[int]:
        out = []
        cache = self._ids
        for piece in pieces:
            token_id = cache.get(piece)
            if token_id is None:
                token_id = zlib.crc32(piece.encode("utf-8")) % self.VOCAB_SIZE
                if len(cache) < 200_000:
                    cache[piece] = token_id
            out.append(token_id)
        return out


# --------------------------------------------------------------------------------------------
# Prefix cache simulation
# --------------------------------------------------------------------------------------------


class PrefixCacheSim:
    """vLLM's automatic prefix caching, simplified but faithful in what the counters show.

    Blocks of ``block_size`` tokens, full blocks only; each block key chains the parent key
    with the block's tokens (and the request's ``cache_salt`` at the root). Lookup walks from
    the first block and stops at the first miss; the hit is capped at ``N - 1`` tokens rounded
    down to whole blocks. Capacity is unlimited unless ``num_gpu_blocks`` is given; then the
    least recently used blocks are evicted, a finished request's deepest blocks first.
    """

    def __init__(self, block_size: int = 16, num_gpu_blocks: int | None = None) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def block_keys(self, tokens: Sequence[Any], salt: str | None = None) -> list[int]:
        bs = self.block_size
        parent = hash(("salt", salt)) if salt else 0
        keys = []
        for start in range(0, len(tokens) - bs + 1, bs):
            parent = hash((parent, tuple(tokens[start : start + bs])))
            keys.append(parent)
        return keys

    def lookup(self, keys: Sequence[int], num_tokens: int) -> int:
        """Tokens of a prompt of ``num_tokens`` tokens served from the cache."""
        max_blocks = max(num_tokens - 1, 0) // self.block_size
        hit = 0
        blocks = self._blocks
        for key in keys[:max_blocks]:
            if key not in blocks:
                break
            hit += 1
        return hit * self.block_size

    def insert(self, keys: Sequence[int]) -> None:
        blocks = self._blocks
        for key in keys:
            if key in blocks:
                blocks.move_to_end(key)
            else:
                blocks[key] = None
        self._evict()

    def release(self, keys: Sequence[int]) -> None:
        """A request finished: its blocks become the most recently freed, deepest first out."""
        blocks = self._blocks
        for key in reversed(keys):
            if key in blocks:
                blocks.move_to_end(key)

    def _evict(self) -> None:
        if self.num_gpu_blocks is None:
            return
        blocks = self._blocks
        while len(blocks) > self.num_gpu_blocks:
            blocks.popitem(last=False)

    def __len__(self) -> int:
        return len(self._blocks)


# --------------------------------------------------------------------------------------------
# Metrics (hand-rolled: prometheus_client's registry is global and slower than we need)
# --------------------------------------------------------------------------------------------


class _Histogram:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[bisect_left(self.buckets, value)] += n
        self.sum += value * n
        self.count += n


def _fmt(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Metrics:
    def __init__(self) -> None:
        self.created = time.time()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.num_preemptions = 0
        self.request_success = dict.fromkeys(FINISH_REASONS, 0)
        self.ttft = _Histogram(TTFT_BUCKETS)
        self.itl = _Histogram(ITL_BUCKETS)
        self.e2e = _Histogram(E2E_BUCKETS)
        self.running = 0
        self.waiting = 0
        self.running_blocks = 0

    def render(self, model_name: str, cache_info: Mapping[str, str], kv_usage: float) -> str:
        base = f'model_name="{_escape_label(model_name)}",engine="0"'
        out: list[str] = []

        def gauge(name: str, doc: str, value: float) -> None:
            out.append(
                f"# HELP {name} {doc}\n# TYPE {name} gauge\n{name}{{{base}}} {_fmt(value)}\n"
            )

        def counter(name: str, doc: str, value: float) -> None:
            out.append(
                f"# HELP {name}_total {doc}\n# TYPE {name}_total counter\n"
                f"{name}_total{{{base}}} {_fmt(value)}\n"
                f"{name}_created{{{base}}} {_fmt(self.created)}\n"
            )

        def histogram(name: str, doc: str, hist: _Histogram) -> None:
            lines = [f"# HELP {name} {doc}\n# TYPE {name} histogram\n"]
            cumulative = 0
            for bound, n in zip((*hist.buckets, float("inf")), hist.counts, strict=True):
                cumulative += n
                lines.append(f'{name}_bucket{{{base},le="{_fmt(bound)}"}} {_fmt(cumulative)}\n')
            lines.append(f"{name}_count{{{base}}} {_fmt(hist.count)}\n")
            lines.append(f"{name}_sum{{{base}}} {_fmt(hist.sum)}\n")
            lines.append(f"{name}_created{{{base}}} {_fmt(self.created)}\n")
            out.append("".join(lines))

        gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            self.running,
        )
        gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", self.waiting
        )
        gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage)
        counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            self.prefix_cache_queries,
        )
        counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            self.prefix_cache_hits,
        )
        counter(
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            self.num_preemptions,
        )
        counter("vllm:prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens)
        counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            self.generation_tokens,
        )
        lines = [
            "# HELP vllm:request_success_total Count of successfully processed requests.\n"
            "# TYPE vllm:request_success_total counter\n"
        ]
        for reason, n in self.request_success.items():
            lines.append(
                f'vllm:request_success_total{{{base},finished_reason="{reason}"}} {_fmt(n)}\n'
            )
        for reason in self.request_success:
            lines.append(
                f'vllm:request_success_created{{{base},finished_reason="{reason}"}} {_fmt(self.created)}\n'
            )
        out.append("".join(lines))
        histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            self.ttft,
        )
        histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            self.itl,
        )
        histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            self.e2e,
        )
        info = ",".join(f'{k}="{_escape_label(v)}"' for k, v in cache_info.items())
        out.append(
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
            "# TYPE vllm:cache_config_info gauge\n"
            f"vllm:cache_config_info{{{info}}} 1.0\n"
        )
        return "".join(out)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    text: str
    segments: list[str]  # one per text token; "".join(segments) == text
    pieces: list[str]  # the text's tokens
    finish_reason: str
    completion_tokens: int  # segments + 1 EOS token when finish_reason == "stop"
    chat_choice_json: str  # the non-streaming choice, serialized once
    text_choice_json: str


class _RequestError(Exception):
    def __init__(self, status: int, message: str, err_type: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type


def _json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode("utf-8"),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error_response(
    status: int, message: str, err_type: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """vLLM >= 0.10 error body: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": err_type, "param": None, "code": status}}
    return _json_response(body, status=status, headers=headers)


_STATUS_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    408: "TimeoutError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailableError",
    504: "GatewayTimeout",
}


def _normalize_responses(
    responses: Mapping[str, Any] | None,
) -> list[tuple[str, str, float | None]]:
    out = []
    for key, value in (responses or {}).items():
        if isinstance(value, str):
            out.append((key, value, None))
        elif isinstance(value, Mapping):
            out.append((key, str(value["text"]), value.get("confidence")))
        elif isinstance(value, Sequence) and len(value) == 2:
            out.append((key, str(value[0]), float(value[1])))
        else:
            raise ValueError(f"responses[{key!r}]: expected text, (text, confidence) or a mapping")
    return out


def _bind_socket(host: str, port: int) -> socket.socket:
    """Bind without listening: until listen() the kernel refuses connections (vLLM start-up)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


class FakeVLLM:
    """Configuration and state of one fake vLLM server (one model, one engine).

    Behaviour knobs:

    * ``served_model_name``: name(s) accepted in ``model``; the first is reported (as vLLM).
    * ``api_key``: ``/v1/*`` answers 401 without ``Authorization: Bearer KEY``; the other
      routes stay open, as in vLLM.
    * ``ttft_s`` / ``tpot_s``: time to the first token and between later tokens.
    * ``startup_refuse_s``: the port refuses connections this long (bound, not listening);
      then ``startup_unhealthy_s`` of ``/health`` 503 (and 503 on ``/v1``), then 200.
    * ``fail_after=N``: after N successful completions, fail ``fail_count`` (default: all)
      further completion requests with ``fail_mode``: an HTTP status (default 500) or
      ``"drop"`` (close the connection without a reply).
    * ``error_sequence``: statuses (or ``"drop"``) returned for the first completion requests,
      then normal service. 429/503 replies carry ``Retry-After`` when ``retry_after_s`` is set.
    * ``die_after=N``: after N successful completions the engine is dead: ``/health`` 503 and
      completion requests 500, forever.
    * ``responses``: ``{substring of the last user message (or prompt): text |
      (text, confidence) | {"text", "confidence"}}``; otherwise a deterministic sentence of
      ``default_output_tokens`` completion tokens (words, a full stop, EOS). ``max_tokens``
      cuts replies (finish_reason ``length``); ``ignore_eos`` generates exactly ``max_tokens``.
      ``response_format: {"type": "json_object"}`` gets ``{"answer": text, "confidence": x}``
      (``confidence`` is the default x).
    * ``enable_prompt_tokens_details``, ``enable_prefix_caching``, ``block_size``,
      ``num_gpu_blocks``, ``max_model_len``: as the vLLM flags of the same names; requests may
      carry ``cache_salt``.
    * ``max_num_seqs``: at most this many requests run at once; the rest wait (gauge).
    * ``record_requests``: keep every completion request body in ``requests`` (turn off for
      long benchmarks).
    """

    def __init__(
        self,
        model: str = "fake/model",
        *,
        served_model_name: str | Sequence[str] | None = None,
        api_key: str | None = None,
        ttft_s: float = 0.0,
        tpot_s: float = 0.0,
        startup_refuse_s: float = 0.0,
        startup_unhealthy_s: float = 0.0,
        fail_after: int | None = None,
        fail_mode: int | str = 500,
        fail_count: int | None = None,
        error_sequence: Iterable[int | str] = (),
        retry_after_s: float | None = None,
        die_after: int | None = None,
        responses: Mapping[str, Any] | None = None,
        default_output_tokens: int = 16,
        confidence: float = 0.9,
        enable_prompt_tokens_details: bool = False,
        enable_prefix_caching: bool = True,
        block_size: int = 16,
        num_gpu_blocks: int | None = None,
        max_model_len: int = 32768,
        max_num_seqs: int | None = None,
        version: str = DEFAULT_VERSION,
        record_requests: bool = True,
    ) -> None:
        self.model = model
        if served_model_name is None:
            names = [model]
        elif isinstance(served_model_name, str):
            names = [served_model_name]
        else:
            names = list(served_model_name)
        if not names:
            raise ValueError("served_model_name must not be empty")
        self.served_model_names = names
        self.api_key = api_key
        self.ttft_s = float(ttft_s)
        self.tpot_s = float(tpot_s)
        self.startup_refuse_s = float(startup_refuse_s)
        self.startup_unhealthy_s = float(startup_unhealthy_s)
        self.fail_after = fail_after
        self.fail_mode = _normalize_failure(fail_mode)
        self.fail_count = fail_count
        self.error_sequence: deque[int | str] = deque(_normalize_failure(e) for e in error_sequence)
        self.retry_after_s = retry_after_s
        self.die_after = die_after
        self.responses = _normalize_responses(responses)
        self.default_output_tokens = max(1, int(default_output_tokens))
        self.confidence = float(confidence)
        self.enable_prompt_tokens_details = enable_prompt_tokens_details
        self.enable_prefix_caching = enable_prefix_caching
        self.max_model_len = int(max_model_len)
        self.max_num_seqs = max_num_seqs
        self.version = version
        self.record_requests = record_requests

        self.tokenizer = FakeTokenizer()
        self.cache = PrefixCacheSim(block_size, num_gpu_blocks)
        self.metrics = _Metrics()
        self.requests: list[dict[str, Any]] = []
        self.completed = 0  # successful completions
        self.failed_injected = 0
        self.dead = False
        self._t0: float | None = None
        self._healthy_at = float("inf")
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(6).hex()
        self._slots: asyncio.Semaphore | None = None
        self._replies: dict[tuple[Any, ...], _Reply] = {}
        self._model_json = json.dumps(self.model_name)

    # ---- knobs that tests may change while running ------------------------------------------

    def queue_errors(self, *items: int | str) -> None:
        """Fail the next completion requests with these statuses (or "drop")."""
        self.error_sequence.extend(_normalize_failure(i) for i in items)

    @property
    def model_name(self) -> str:
        return self.served_model_names[0]

    def health_status(self) -> int:
        if self.dead or self._t0 is None or time.monotonic() < self._healthy_at:
            return 503
        return 200

    def cache_config_info(self) -> dict[str, str]:
        return {
            "block_size": str(self.cache.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": str(self.enable_prefix_caching),
            "engine": "0",
            "gpu_memory_utilization": "0.92",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(self.cache.num_gpu_blocks),
            "num_gpu_blocks_override": "None",
        }

    def metrics_text(self) -> str:
        m = self.metrics
        usage = 0.0
        if self.cache.num_gpu_blocks:
            usage = min(1.0, m.running_blocks / self.cache.num_gpu_blocks)
        return m.render(self.model_name, self.cache_config_info(), usage)

    # ---- app ----------------------------------------------------------------------------------

    def routes(self) -> dict[tuple[str, str], Callable[[web.BaseRequest], Any]]:
        return {
            ("GET", "/health"): self._health,
            ("GET", "/ping"): self._health,
            ("GET", "/version"): self._version,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._models,
            ("POST", "/tokenize"): self._tokenize,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
        }

    def make_app(self) -> web.Application:
        """The routes as an aiohttp Application (e.g. for aiohttp's test client)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        for (method, path), handler in self.routes().items():
            app.router.add_route(method, path, handler)
        return app

    def make_server(self) -> web.Server:
        """aiohttp's low-level server with a dict route table: the same handlers without the
        Application's router and middleware machinery, ~40 us less per request (the double
        serves throughput benchmarks)."""
        table = self.routes()
        paths = {path for _, path in table}
        loop = asyncio.get_running_loop()

        async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
            handler = table.get((request.method, request.path))
            if handler is not None:
                return await handler(request)
            if request.path in paths:
                return _json_response({"detail": "Method Not Allowed"}, status=405)
            return _json_response({"detail": "Not Found"}, status=404)

        def make_request(*args: Any) -> web.BaseRequest:
            # args: (message, payload, protocol, writer, task), as web.Server passes them
            return web.BaseRequest(*args, loop, client_max_size=MAX_BODY_BYTES)

        return web.Server(dispatch, request_factory=make_request, access_log=None)

    def _authorized(self, request: web.BaseRequest) -> bool:
        return (
            self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"
        )

    async def _health(self, request: web.BaseRequest) -> web.Response:
        return web.Response(status=self.health_status())

    async def _version(self, request: web.BaseRequest) -> web.Response:
        return _json_response({"version": self.version})

    async def _metrics(self, request: web.BaseRequest) -> web.Response:
        return web.Response(
            body=self.metrics_text().encode("utf-8"),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _models(self, request: web.BaseRequest) -> web.Response:
        if not self._authorized(request):
            return _json_response({"error": "Unauthorized"}, status=401)
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.model,
                "parent": None,
                "max_model_len": self.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{self._id_prefix}{i}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for i, name in enumerate(self.served_model_names)
        ]
        return _json_response({"object": "list", "data": data})

    async def _tokenize(self, request: web.BaseRequest) -> web.Response:
        try:
            body = await self._read_json(request)
            self._check_model(body)
            if "messages" in body:
                text = self._render_messages(body)
            elif "prompt" in body:
                text = self._prompt_text(body["prompt"])
            else:
                raise _RequestError(400, "either 'messages' or 'prompt' is required")
        except _RequestError as e:
            return _error_response(e.status, e.message, e.err_type)
        pieces = self.tokenizer.pieces(text)
        return _json_response(
            {
                "count": len(pieces),
                "max_model_len": self.max_model_len,
                "tokens": self.tokenizer.ids(pieces),
                "token_strs": pieces if body.get("return_token_strs") else None,
            }
        )

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def _completions(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    # ---- request parsing ------------------------------------------------------------------------

    @staticmethod
    async def _read_json(request: web.BaseRequest) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise _RequestError(400, f"Invalid JSON body: {e}") from None
        if not isinstance(body, dict):
            raise _RequestError(400, "request body must be a JSON object")
        return body

    def _check_model(self, body: Mapping[str, Any]) -> None:
        model = body.get("model")
        if model is not None and model not in self.served_model_names:
            raise _RequestError(404, f"The model `{model}` does not exist.", "NotFoundError")

    def _render_messages(self, body: Mapping[str, Any]) -> str:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _RequestError(400, "'messages' must be a non-empty list")
        try:
            return self.tokenizer.render_chat(
                messages, bool(body.get("add_generation_prompt", True)), body.get("tools")
            )
        except ValueError as e:
            raise _RequestError(400, str(e)) from None

    @staticmethod
    def _prompt_text(prompt: Any) -> str:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _RequestError(
                400, "'prompt' must be a string (batched prompts are not supported)"
            )
        return prompt

    def _pick_reply(self, query: str, body: Mapping[str, Any], max_tokens: int) -> _Reply:
        fmt = body.get("response_format")
        fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
        ignore_eos = bool(body.get("ignore_eos"))
        key = (query, max_tokens, ignore_eos, fmt_type)
        reply = self._replies.get(key)
        if reply is None:
            if len(self._replies) >= 4096:
                self._replies.clear()
            reply = self._replies[key] = self._make_reply(query, max_tokens, ignore_eos, fmt_type)
        return reply

    def _make_reply(
        self, query: str, max_tokens: int, ignore_eos: bool, fmt_type: str | None
    ) -> _Reply:
        text: str | None = None
        confidence = self.confidence
        for key, value, conf in self.responses:
            if key in query:
                text = value
                if conf is not None:
                    confidence = conf
                break
        if text is None:
            # A natural reply is default_output_tokens long: words, a full stop, then EOS.
            n_words = max_tokens - 1 if ignore_eos else max(self.default_output_tokens - 2, 0)
            seed = zlib.crc32(query.encode("utf-8"))
            words = [_WORDS[(seed + 7 * i) % len(_WORDS)] for i in range(max(n_words, 0))]
            text = (" ".join(words) + ".").capitalize()
        if fmt_type in ("json_object", "json_schema"):
            text = json.dumps({"answer": text, "confidence": confidence})
        spans = [m.end() for m in self.tokenizer.PIECE_RE.finditer(text)]
        if ignore_eos and len(spans) < max_tokens:  # keep "generating" filler words
            filler = " " + " ".join(_WORDS[i % len(_WORDS)] for i in range(max_tokens - len(spans)))
            text += filler
            spans = [m.end() for m in self.tokenizer.PIECE_RE.finditer(text)]
        if len(spans) >= max_tokens:  # no room left for EOS: cut at max_tokens ("length")
            text = text[: spans[max_tokens - 1]]
            spans = spans[:max_tokens]
            finish = "length"
        else:
            finish = "stop"
        segments = []
        start = 0
        for end in spans:
            segments.append(text[start:end])
            start = end
        if segments and start < len(text):
            segments[-1] += text[start:]
        elif not segments and text:
            segments.append(text)
        completion_tokens = len(segments) + (1 if finish == "stop" else 0)
        message = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": [],
            "reasoning_content": None,
        }
        chat_choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
        }
        text_choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        return _Reply(
            text,
            segments,
            self.tokenizer.pieces(text),
            finish,
            completion_tokens,
            json.dumps(chat_choice),
            json.dumps(text_choice),
        )

    def _next_failure(self) -> int | str | None:
        if self.error_sequence:
            return self.error_sequence.popleft()
        if self.fail_after is not None and self.completed >= self.fail_after:
            if self.fail_count is None or self.failed_injected < self.fail_count:
                self.failed_injected += 1
                return self.fail_mode
        return None

    # ---- completions ----------------------------------------------------------------------------

    async def _complete(self, request: web.BaseRequest, chat: bool) -> web.StreamResponse:
        arrival = time.perf_counter()
        if not self._authorized(request):
            return _json_response({"error": "Unauthorized"}, status=401)
        try:
            body = await self._read_json(request)
        except _RequestError as e:
            return _error_response(e.status, e.message, e.err_type)
        if self.record_requests:
            self.requests.append(body)
        if self.dead:
            return _error_response(
                500,
                "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                "InternalServerError",
            )
        if self.health_status() != 200:
            return _error_response(503, "The server is starting up.", "ServiceUnavailableError")
        failure = self._next_failure()
        if failure == "drop":
            return self._drop(request)
        if failure is not None:
            assert isinstance(failure, int)
            headers = None
            if self.retry_after_s is not None and failure in (429, 503):
                headers = {"Retry-After": _fmt_retry_after(self.retry_after_s)}
            return _error_response(
                failure,
                f"injected failure ({failure})",
                _STATUS_TYPES.get(failure, "Error"),
                headers,
            )
        try:
            self._check_model(body)
            if chat:
                prompt_text = self._render_messages(body)
                query = ""
                for message in reversed(body["messages"]):
                    if message.get("role") == "user":
                        query = self.tokenizer.content_text(message.get("content"))
                        break
            else:
                if "prompt" not in body:
                    raise _RequestError(400, "'prompt' is required")
                prompt_text = self._prompt_text(body["prompt"])
                query = prompt_text
            prompt = self.tokenizer.pieces(prompt_text)
            n_prompt = len(prompt)
            if n_prompt >= self.max_model_len:
                raise _RequestError(
                    400,
                    f"This model's maximum context length is {self.max_model_len} tokens. "
                    f"However, your request has {n_prompt} input tokens. Please reduce the "
                    "length of the input messages.",
                )
            max_tokens = body.get("max_completion_tokens") if chat else None
            if max_tokens is None:
                max_tokens = body.get("max_tokens")
            if max_tokens is None:
                max_tokens = self.max_model_len - n_prompt if chat else 16
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise _RequestError(400, "max_tokens must be a positive integer")
            if n_prompt + max_tokens > self.max_model_len:
                raise _RequestError(
                    400,
                    f"This model's maximum context length is {self.max_model_len} tokens. However, "
                    f"you requested {n_prompt + max_tokens} tokens ({n_prompt} in the messages, "
                    f"{max_tokens} in the completion). Please reduce the length of the messages "
                    "or completion.",
                )
            reply = self._pick_reply(query, body, max_tokens)
        except _RequestError as e:
            return _error_response(e.status, e.message, e.err_type)

        if self.max_num_seqs is not None:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.max_num_seqs)
            self.metrics.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.metrics.waiting -= 1
        try:
            return await self._run(request, body, chat, prompt, reply, arrival)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _drop(self, request: web.BaseRequest) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        # Nothing reaches the client; aiohttp discards this response on the closed transport.
        return web.Response(status=500)

    async def _run(
        self,
        request: web.BaseRequest,
        body: Mapping[str, Any],
        chat: bool,
        prompt: list[str],
        reply: _Reply,
        arrival: float,
    ) -> web.StreamResponse:
        m = self.metrics
        cache = self.cache
        n_prompt = len(prompt)
        salt = body.get("cache_salt") if isinstance(body.get("cache_salt"), str) else None
        cached = 0
        keys: list[int] = []  # blocks of the prompt and the reply's computed tokens
        n_prompt_blocks = n_prompt // cache.block_size
        if self.enable_prefix_caching:
            # Generated tokens fill blocks too, so a multi-turn follow-up can hit them; the
            # last sampled token has no KV yet unless EOS (not in the text) followed it.
            out = reply.pieces if reply.finish_reason == "stop" else reply.pieces[:-1]
            keys = cache.block_keys(prompt + out, salt)
            cached = cache.lookup(keys, n_prompt)
            cache.insert(keys[:n_prompt_blocks])
            m.prefix_cache_queries += n_prompt
            m.prefix_cache_hits += cached
        n_blocks = -(-(n_prompt + reply.completion_tokens) // cache.block_size)
        m.running += 1
        m.running_blocks += n_blocks
        usage: dict[str, Any] = {
            "prompt_tokens": n_prompt,
            "total_tokens": n_prompt + reply.completion_tokens,
            "completion_tokens": reply.completion_tokens,
        }
        if self.enable_prompt_tokens_details and cached > 0:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        seq = next(self._ids)
        finish = reply.finish_reason
        emitted = 0
        try:
            if body.get("stream"):
                response, emitted, finish = await self._stream(
                    request, body, chat, reply, usage, arrival, seq
                )
            else:
                response = await self._unary(chat, reply, usage, arrival, seq)
                emitted = reply.completion_tokens
            return response
        finally:
            m.running -= 1
            m.running_blocks -= n_blocks
            m.prompt_tokens += n_prompt
            m.generation_tokens += emitted
            m.request_success[finish] += 1
            m.e2e.observe(time.perf_counter() - arrival)
            if self.enable_prefix_caching and finish != "abort":
                cache.insert(keys[n_prompt_blocks:])
                cache.release(keys)
            if finish != "abort":
                self.completed += 1
                if self.die_after is not None and self.completed >= self.die_after:
                    self.dead = True

    def _completion_id(self, chat: bool, seq: int) -> str:
        return f"{'chatcmpl' if chat else 'cmpl'}-{self._id_prefix}{seq:020x}"

    async def _unary(
        self, chat: bool, reply: _Reply, usage: dict[str, Any], arrival: float, seq: int
    ) -> web.Response:
        m = self.metrics
        if self.ttft_s > 0:
            await asyncio.sleep(self.ttft_s)
        m.ttft.observe(time.perf_counter() - arrival)
        decode = self.tpot_s * (reply.completion_tokens - 1)
        if decode > 0:
            await asyncio.sleep(decode)
        m.itl.observe(self.tpot_s, reply.completion_tokens - 1)
        obj = "chat.completion" if chat else "text_completion"
        choice = reply.chat_choice_json if chat else reply.text_choice_json
        data = (
            f'{{"id":"{self._completion_id(chat, seq)}","object":"{obj}",'
            f'"created":{int(time.time())},"model":{self._model_json},'
            f'"choices":[{choice}],"usage":{json.dumps(usage)}}}'
        )
        return web.Response(body=data.encode("utf-8"), content_type="application/json")

    async def _stream(
        self,
        request: web.BaseRequest,
        body: Mapping[str, Any],
        chat: bool,
        reply: _Reply,
        usage: dict[str, Any],
        arrival: float,
        seq: int,
    ) -> tuple[web.StreamResponse, int, str]:
        """Returns (response, tokens emitted, finish reason or "abort")."""
        m = self.metrics
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        continuous = include_usage and bool(options.get("continuous_usage_stats"))
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = (
            f'{{"id":"{self._completion_id(chat, seq)}","object":"{obj}",'
            f'"created":{int(time.time())},"model":{self._model_json},"choices":'
        )
        n_prompt = usage["prompt_tokens"]

        def event(choice: dict[str, Any] | None, n_done: int) -> bytes:
            chunk = head + ("[]" if choice is None else "[" + json.dumps(choice) + "]")
            if continuous:
                chunk += ',"usage":' + json.dumps(
                    {
                        "prompt_tokens": n_prompt,
                        "total_tokens": n_prompt + n_done,
                        "completion_tokens": n_done,
                    }
                )
            return b"data: " + chunk.encode("utf-8") + b"}\n\n"

        def token_choice(text: str, finish: str | None) -> dict[str, Any]:
            if chat:
                return {
                    "index": 0,
                    "delta": {"content": text},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            return {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }

        role_choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        # One entry per generated token (the EOS token carries no text).
        tokens: list[tuple[str, str | None]] = [(s, None) for s in reply.segments]
        if reply.finish_reason == "stop":
            tokens.append(("", "stop"))
        elif tokens:
            tokens[-1] = (tokens[-1][0], reply.finish_reason)
        else:
            tokens.append(("", reply.finish_reason))

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        emitted = 0
        try:
            await response.prepare(request)
            if self.ttft_s == 0 and self.tpot_s == 0:
                parts = []
                if chat:
                    parts.append(event(role_choice, 0))
                for i, (text, finish) in enumerate(tokens, 1):
                    parts.append(event(token_choice(text, finish), i))
                if include_usage:
                    parts.append(
                        b"data: " + (head + '[],"usage":' + json.dumps(usage)).encode() + b"}\n\n"
                    )
                parts.append(b"data: [DONE]\n\n")
                m.ttft.observe(time.perf_counter() - arrival)
                m.itl.observe(0.0, len(tokens) - 1)
                await response.write(b"".join(parts))
                emitted = len(tokens)
            else:
                if self.ttft_s > 0:
                    await asyncio.sleep(self.ttft_s)
                first_at = time.perf_counter()
                m.ttft.observe(first_at - arrival)
                if chat:
                    await response.write(event(role_choice, 0))
                last = first_at
                for i, (text, finish) in enumerate(tokens):
                    if i:
                        delay = first_at + i * self.tpot_s - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        now = time.perf_counter()
                        m.itl.observe(now - last)
                        last = now
                    await response.write(event(token_choice(text, finish), i + 1))
                    emitted = i + 1
                tail = b""
                if include_usage:
                    tail = (
                        b"data: " + (head + '[],"usage":' + json.dumps(usage)).encode() + b"}\n\n"
                    )
                await response.write(tail + b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:  # the client went away mid-stream
            return response, emitted, "abort"
        return response, emitted, reply.finish_reason

    # ---- running ----------------------------------------------------------------------------------

    async def serve(
        self,
        sock: socket.socket,
        stop: asyncio.Event,
        on_listening: Callable[[str, int], None] | None = None,
    ) -> None:
        """Serve on a bound socket until ``stop`` is set, with the start-up phases."""
        self._t0 = time.monotonic()
        self._healthy_at = self._t0 + self.startup_refuse_s + self.startup_unhealthy_s
        runner = web.ServerRunner(self.make_server(), shutdown_timeout=0.5)
        await runner.setup()
        try:
            if self.startup_refuse_s > 0:
                try:
                    await asyncio.wait_for(stop.wait(), self.startup_refuse_s)
                    return
                except asyncio.TimeoutError:
                    pass
            site = web.SockSite(runner, sock, backlog=1024)
            await site.start()
            if on_listening is not None:
                host, port = sock.getsockname()[:2]
                on_listening(host, port)
            await stop.wait()
        finally:
            await runner.cleanup()
            sock.close()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> FakeVLLMHandle:
        """Start serving in a daemon thread; returns once bound (and listening, if no delay)."""
        sock = _bind_socket(host, port)
        bound_port = sock.getsockname()[1]
        started = threading.Event()
        listening = threading.Event()
        state: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            stop = asyncio.Event()
            state["loop"], state["stop"] = loop, stop
            started.set()
            try:
                loop.run_until_complete(self.serve(sock, stop, lambda h, p: listening.set()))
            except BaseException as e:  # surfaced by stop()
                state["error"] = e
                listening.set()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name=f"fake-vllm-{bound_port}", daemon=True)
        thread.start()
        started.wait()
        if self.startup_refuse_s == 0:
            listening.wait(10)
        url_host = f"[{host}]" if ":" in host else host
        return FakeVLLMHandle(self, f"http://{url_host}:{bound_port}", bound_port, thread, state)

    def serve_forever(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        on_listening: Callable[[str, int], None] | None = None,
    ) -> None:
        """Serve in the foreground until SIGTERM/SIGINT."""
        sock = _bind_socket(host, port)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(sock, stop, on_listening)

        asyncio.run(main())


class FakeVLLMHandle:
    """A FakeVLLM serving in a background thread."""

    def __init__(
        self,
        server: FakeVLLM,
        base_url: str,
        port: int,
        thread: threading.Thread,
        state: dict[str, Any],
    ) -> None:
        self.server = server
        self.base_url = base_url
        self.port = port
        self._thread = thread
        self._state = state

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Bodies of the completion requests received (chat and text), in arrival order."""
        return self.server.requests

    def metrics_text(self) -> str:
        return self.server.metrics_text()

    def stop(self, timeout: float = 10.0) -> None:
        loop = self._state.get("loop")
        stop = self._state.get("stop")
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # loop already closed
                pass
        self._thread.join(timeout)
        if "error" in self._state:
            raise RuntimeError(f"fake vLLM server failed: {self._state['error']!r}")

    def __enter__(self) -> FakeVLLMHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _normalize_failure(item: int | str) -> int | str:
    if isinstance(item, str):
        if item.strip().lower() == "drop":
            return "drop"
        item = int(item)
    if not 400 <= int(item) <= 599:
        raise ValueError(f"injected failure must be an HTTP error status or 'drop', got {item!r}")
    return int(item)


def _fmt_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_behaviour_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``python -m tests.doubles.fake_vllm`` (the stand-in uses env vars)."""
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds to the first token")
    parser.add_argument("--tpot", type=float, default=0.0, help="seconds per later token")
    parser.add_argument("--startup-refuse-s", type=float, default=0.0)
    parser.add_argument("--startup-unhealthy-s", type=float, default=0.0)
    parser.add_argument("--fail-after", type=int, default=None)
    parser.add_argument("--fail-mode", default="500", help="HTTP status or 'drop'")
    parser.add_argument("--fail-count", type=int, default=None)
    parser.add_argument("--error-sequence", default="", help="comma list, e.g. 429,503,drop")
    parser.add_argument("--retry-after", type=float, default=None)
    parser.add_argument("--die-after", type=int, default=None)
    parser.add_argument("--responses-json", default=None, help="file with the responses mapping")
    parser.add_argument("--default-output-tokens", type=int, default=16)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--enable-prompt-tokens-details", action="store_true")
    parser.add_argument(
        "--disable-prefix-caching", "--no-enable-prefix-caching", action="store_true"
    )
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--num-gpu-blocks", type=int, default=None)
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    parser.add_argument("--no-record-requests", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.doubles.fake_vllm", description="A vLLM-compatible test server."
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--vllm-version", default=DEFAULT_VERSION)
    add_behaviour_args(parser)
    args = parser.parse_args(argv)
    responses = None
    if args.responses_json:
        with open(args.responses_json, encoding="utf-8") as f:
            responses = json.load(f)
    server = FakeVLLM(
        args.model,
        served_model_name=args.served_model_name,
        api_key=args.api_key,
        ttft_s=args.ttft,
        tpot_s=args.tpot,
        startup_refuse_s=args.startup_refuse_s,
        startup_unhealthy_s=args.startup_unhealthy_s,
        fail_after=args.fail_after,
        fail_mode=args.fail_mode,
        fail_count=args.fail_count,
        error_sequence=[e for e in args.error_sequence.split(",") if e.strip()],
        retry_after_s=args.retry_after,
        die_after=args.die_after,
        responses=responses,
        default_output_tokens=args.default_output_tokens,
        confidence=args.confidence,
        enable_prompt_tokens_details=args.enable_prompt_tokens_details,
        enable_prefix_caching=not args.disable_prefix_caching,
        block_size=args.block_size,
        num_gpu_blocks=args.num_gpu_blocks,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        version=args.vllm_version,
        record_requests=not args.no_record_requests,
    )

    def listening(host: str, port: int) -> None:
        print(
            f"INFO fake vLLM {server.version} serving {server.model_name} on http://{host}:{port}",
            flush=True,
        )

    server.serve_forever(args.host, args.port, on_listening=listening)
    return 0


if __name__ == "__main__":
    sys.exit(main())
