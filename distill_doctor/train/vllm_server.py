"""A vLLM generation engine for on-policy sampling, run as its own process in ``.venv-vllm``.

Executed by path (``.venv-vllm/bin/python distill_doctor/train/vllm_server.py --model DIR ...``),
never imported by the trainer: it imports vLLM and nothing of distill_doctor, because vLLM's CPU
wheel pins a transformers older than the one distill-doctor needs (docs/training.md, "Generation
engines"). It holds one ``vllm.LLM`` and answers three requests:

- ``POST /v1/completions``: the OpenAI completions request with token ids in and out (``prompt`` a
  list of token-id lists; each choice carries ``token_ids``), so the trainer never re-tokenises;
  extra vLLM sampling fields ``stop_token_ids``, ``ignore_eos``, ``allowed_token_ids``, ``seed``.
  With vLLM's ``prompt_logprobs: k`` each choice also carries ``prompt_logprobs`` in the shape
  ``vllm serve`` writes (per prompt position ``null`` or ``{"<id>": {"logprob", "rank",
  "decoded_token"}}``: the top-k plus the prompt's own token): how a served teacher scores a sequence
  (``max_tokens: 1``, as TRL and verl ask it; ``vllm_teacher`` on the trainer's side).
- ``POST /update_weights``: ``{"path": FILE}`` (a safetensors file the trainer wrote, on /dev/shm
  where there is one) loaded into the running model with the model's own ``load_weights``.
- ``GET /health``, ``POST /shutdown``.

Two transports carry the same requests: HTTP on ``--host``/``--port`` (server mode) or JSON
lines on stdin/stdout (``--stdio``, colocated mode: the trainer's child, gone when its pipe closes).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


class Engine:
    """One vLLM model; ``handle(route, body)`` answers a request (a dict) or raises ``ValueError``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from vllm import LLM

        self.model = args.model
        self.version = 0
        self.llm = LLM(
            model=args.model,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            enforce_eager=True,
            skip_tokenizer_init=True,
            seed=args.seed,
            gpu_memory_utilization=args.gpu_memory_utilization,
            enable_prefix_caching=False,
            max_logprobs=args.max_logprobs,
        )

    def handle(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        if route == "/health":
            return {"status": "ok", "model": self.model, "weights_version": self.version}
        if route == "/v1/completions":
            return self.complete(body)
        if route == "/update_weights":
            return self.update_weights(body)
        raise ValueError(f"unknown route {route}")

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        from vllm.inputs import TokensPrompt

        prompts = body.get("prompt")
        if not isinstance(prompts, list) or not all(isinstance(p, list) for p in prompts):
            raise ValueError("prompt must be a list of token-id lists")
        seeds = body.get("seed")
        if not isinstance(seeds, list):  # one seed for all, or one per prompt (equal prompts differ)
            seeds = [seeds] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError(f"seed: {len(seeds)} seeds for {len(prompts)} prompts")
        params = [self._params(body, seed) for seed in seeds]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
        )
        choices = []
        for i, out in enumerate(outputs):
            c = out.outputs[0]
            choice = {
                "index": i,
                "text": "",
                "token_ids": list(c.token_ids),
                "finish_reason": c.finish_reason,
            }
            if body.get("prompt_logprobs") is not None:
                choice["prompt_logprobs"] = _prompt_logprobs_json(out.prompt_logprobs)
            choices.append(choice)
        n_out = sum(len(c["token_ids"]) for c in choices)
        n_in = sum(len(p) for p in prompts)
        return {
            "id": f"cmpl-{time.time_ns()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
            "weights_version": self.version,
        }

    @staticmethod
    def _params(body: dict[str, Any], seed: int | None):
        from vllm import SamplingParams

        return SamplingParams(
            n=1,
            max_tokens=int(body.get("max_tokens", 16)),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            top_k=int(body.get("top_k", 0)) or -1,
            seed=seed,
            stop_token_ids=list(body.get("stop_token_ids") or []),
            ignore_eos=bool(body.get("ignore_eos", False)),
            allowed_token_ids=body.get("allowed_token_ids"),
            prompt_logprobs=body.get("prompt_logprobs"),
            detokenize=False,
        )

    def update_weights(self, body: dict[str, Any]) -> dict[str, Any]:
        from safetensors.torch import load_file

        path = body.get("path")
        if not isinstance(path, str) or not os.path.isfile(path):
            raise ValueError(f"update_weights needs the path of a safetensors file, got {path!r}")
        weights = load_file(path)

        def load(worker) -> None:
            # vLLM's in-place reload: checkpoint-format tensors through the model's load_weights, then the
            # same post-processing as at start-up (the CPU backend repacks linear weights into its kernels).
            worker.model_runner.reload_weights(
                weights_iterator=iter(weights.items()), is_checkpoint_format=True
            )

        self.llm.collective_rpc(load)
        self.llm.reset_prefix_cache()
        self.version = int(body.get("version", self.version + 1))
        return {"tensors": len(weights), "weights_version": self.version}


def _prompt_logprobs_json(positions) -> list[dict[str, dict[str, Any]] | None]:
    """vLLM's per-position prompt log-probs as ``vllm serve`` sends them: ``null`` for the first
    position, else ``{"<token id>": {"logprob", "rank", "decoded_token"}}``; -inf becomes -9999.0
    (JSON has no infinity; vLLM's server clamps the same way)."""
    out: list[dict[str, dict[str, Any]] | None] = []
    for position in positions or []:
        if position is None:
            out.append(None)
            continue
        out.append(
            {
                str(token): {
                    "logprob": max(float(lp.logprob), -9999.0),
                    "rank": lp.rank,
                    "decoded_token": lp.decoded_token,
                }
                for token, lp in position.items()
            }
        )
    return out


def _http(engine: Engine, host: str, port: int, held: socket.socket | None = None) -> None:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self._answer({})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as err:
                self._reply(400, {"error": {"message": f"bad JSON: {err}", "type": "invalid_request_error"}})
                return
            if self.path == "/shutdown":
                self._reply(200, {"status": "stopping"})
                raise SystemExit(0)
            self._answer(body)

        def _answer(self, body: dict[str, Any]) -> None:
            try:
                self._reply(200, engine.handle(self.path, body))
            except ValueError as err:
                self._reply(400, {"error": {"message": str(err), "type": "invalid_request_error"}})
            except Exception as err:  # the engine failed: say what, keep serving
                self._reply(
                    500, {"error": {"message": f"{type(err).__name__}: {err}", "type": "engine_error"}}
                )

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise
            pass

    if held is not None:
        held.close()  # HTTPServer sets SO_REUSEADDR: it binds the same port at once
    server = HTTPServer((host, port), Handler)
    print(f"vllm_server: listening on http://{host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()


def _stdio(engine: Engine, out) -> None:
    """JSON lines: ``{"route": ..., "body": {...}}`` in, ``{"ok": true, "result": ...}`` or an error out."""
    out.write(json.dumps({"ok": True, "result": {"status": "ready"}}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request.get("route") == "/shutdown":
                break
            reply = {"ok": True, "result": engine.handle(request["route"], request.get("body") or {})}
        except (ValueError, KeyError) as err:
            reply = {"ok": False, "error": str(err), "type": "invalid_request_error"}
        except Exception as err:
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}", "type": "engine_error"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _exit_with_parent(parent: int) -> None:
    """A server the trainer started must not outlive it (a killed trainer cannot send /shutdown)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory (config.json + weights)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument(
        "--max-logprobs", type=int, default=20, help="largest prompt_logprobs a request may ask for"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port (printed on stderr)")
    parser.add_argument(
        "--stdio", action="store_true", help="answer JSON lines on stdin/stdout instead of HTTP"
    )
    parser.add_argument(
        "--parent-pid", type=int, default=0, help="exit when this process (the trainer) is gone"
    )
    args = parser.parse_args(argv)
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    out = None
    if args.stdio:  # replies go to the real stdout; everything vLLM prints goes to stderr
        out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
    held = None if args.stdio else _reserve(args.host, args.port)
    engine = Engine(args)
    if out is not None:
        _stdio(engine, out)
    else:
        _http(engine, args.host, args.port, held)


def _reserve(host: str, port: int) -> socket.socket | None:
    """Bind the HTTP port before the engine loads (tens of seconds), so that nothing else takes it
    meanwhile: vLLM itself opens sockets on free ports while it starts, and once took the port the
    trainer had chosen ("Address already in use" when the server finally bound it)."""
    if not port:
        return None
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind((host, port))
    return held


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: load_weights runs in it
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    main()
