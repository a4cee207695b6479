"""A small but real OpenAI-compatible chat-completions server for the endpoint tests: real HTTP on
loopback, real sampling from a transformers policy folder (the tiny test policy), `n` honoured.

    python tests/endpoint_server.py MODEL_DIR [--port 0] [--key SECRET]

prints `listening on PORT` once it serves. Faults are asked for by a path prefix before /v1, so a
test points an endpoint's base_url at them and the retries are tested against a real server:

    /fail/<status>/<count>/<key>/v1/...   the first <count> requests under this key answer <status>
    /slow/<seconds>/v1/...                sleep before answering (timeouts)
    /key/<digest>/v1/...                  401 unless `Authorization: Bearer <key>` with key_digest(key) ==
                                          <digest> (as OpenAI answers), so the key is not in the URL

A scripted judge, for the judge tests: a path with /script/<name>/ anywhere before /v1 (so after a
fault prefix too: /fail/429/2/k/script/longer/v1) answers, instead of sampling, one verdict letter read
from the last user turn in MT-Bench's pairwise layout (training.ml.judge.PAIR_LAYOUT):

    longer     the longer answer: consistent, whichever is shown first
    shorter    the shorter answer: consistent
    first      always "A", the answer shown first: every order swap disagrees
    unsure     "Both are fine." (names neither answer)

A rating question (one answer in training.ml.judge.RATING_LAYOUT, asked where the project enables Likert
ratings or flags) gets "No rating." unless the name ends in "+rate" (/script/longer+rate/): then the
verdict script answers the pair questions as before and every rating question gets one line of JSON,
{"likert": L, "flags": ["hallucination", "not_a_flag"]}, L = min(7, 1 + len(answer) // 10) (longer
answers rate higher; "not_a_flag" is no project's flag, for the parser to drop).

GET /_requests lists every chat request seen (path, the Authorization header, the body). With
--key, a request without `Authorization: Bearer <key>` gets 401, as OpenAI answers.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def key_digest(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]


class State:
    def __init__(self, model_dir: str, key: str = ""):
        import torch

        from training.ml.text import load_policy

        torch.set_num_threads(1)
        self.model, self.tokenizer = load_policy(model_dir, "cpu")
        self.model.eval()
        self.name = Path(model_dir).name
        self.key = key
        self.lock = threading.Lock()  # one generate at a time: the model is not thread-safe
        self.faults: dict[str, int] = {}
        self.seen: list[dict] = []

    def generate(self, body: dict) -> list[str]:
        import torch

        from training.ml.generate import decode_responses, sample

        n = max(1, int(body.get("n") or 1))
        with self.lock:
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            seqs, _, mask = sample(
                self.model, self.tokenizer, [body["messages"]], n, float(body.get("temperature", 1.0)),
                float(body.get("top_p", 1.0)), int(body.get("max_tokens") or 16),
            )
            return decode_responses(self.tokenizer, seqs, mask)


_ANSWER = {label: re.compile(rf"\[The Start of Assistant {label}'s Answer\]\n(.*?)\n\[The End of Assistant {label}'s Answer\]",
                             re.S) for label in "AB"}


_RATED = re.compile(r"\[The Start of the Assistant's Answer\]\n(.*?)\n\[The End of the Assistant's Answer\]", re.S)
RATE_OPTION = "+rate"
RATE_FLAGS = ["hallucination", "not_a_flag"]


def scripted_verdict(script: str, messages: list[dict]) -> str:
    """The scripted judge's reply to a judge prompt or a rating question (see the module docstring)."""
    text = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    script, rates = script.removesuffix(RATE_OPTION), script.endswith(RATE_OPTION)
    rated = _RATED.search(text)
    if rated:
        if not rates:
            return "No rating."
        return json.dumps({"likert": min(7, 1 + len(rated.group(1)) // 10), "flags": RATE_FLAGS})
    found = {label: pattern.search(text) for label, pattern in _ANSWER.items()}
    a, b = (found[label].group(1) if found[label] else "" for label in "AB")
    if script == "longer":
        return "A" if len(a) > len(b) else "B"
    if script == "shorter":
        return "A" if len(a) < len(b) else "B"
    if script == "first":
        return "A"
    if script == "unsure":
        return "Both are fine."
    raise ValueError(f"no script {script!r}")


def make_handler(state: State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                                          "code": status}})

        def do_GET(self):
            if self.path == "/_requests":
                with state.lock:
                    self._send(200, {"requests": list(state.seen)})
            elif self.path.endswith("/v1/models"):
                self._send(200, {"object": "list", "data": [{"id": state.name, "object": "model"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            prefix, _, route = self.path.partition("/v1/")
            if route != "chat/completions":
                return self._error(404, f"no route {self.path}")
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._error(400, "the body is not JSON")
            auth = self.headers.get("Authorization", "")
            with state.lock:
                state.seen.append({"path": self.path, "authorization": auth, "body": body})
            parts = [p for p in prefix.split("/") if p]
            if parts[:1] == ["slow"]:
                time.sleep(float(parts[1]))
            if parts[:1] == ["fail"]:
                status, count, key = int(parts[1]), int(parts[2]), parts[3]
                with state.lock:
                    done = state.faults.get(key, 0)
                    state.faults[key] = done + 1
                if done < count:
                    return self._error(status, f"injected {status} ({done + 1} of {count})")
            if parts[:1] == ["key"] and key_digest(auth.removeprefix("Bearer ")) != parts[1]:
                return self._error(401, "Incorrect API key provided.")
            if state.key and auth != f"Bearer {state.key}":
                return self._error(401, "Incorrect API key provided.")
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                return self._error(400, "'messages' is required")
            if "script" in parts:
                try:
                    texts = [scripted_verdict(parts[parts.index("script") + 1], body["messages"])]
                except (ValueError, IndexError) as exc:
                    return self._error(404, str(exc))
            else:
                texts = state.generate(body)
            self._send(200, {
                "id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", state.name),
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                            for i, t in enumerate(texts)],
            })

    return Handler


def serve(model_dir: str, port: int = 0, key: str = "") -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(State(model_dir, key)))
    server.daemon_threads = True
    return server


class ServerProcess:
    """The server as a subprocess of the tests (start_server); base(prefix) is a base_url."""

    def __init__(self, proc, port: int):
        self.proc, self.port = proc, port
        self.root = f"http://127.0.0.1:{port}"

    def base(self, prefix: str = "") -> str:
        return f"{self.root}{prefix}/v1"

    def requests(self, prefix: str = "") -> list[dict]:
        import requests

        seen = requests.get(f"{self.root}/_requests", timeout=10).json()["requests"]
        return [r for r in seen if r["path"].startswith(prefix + "/v1/")]

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_server(model_dir, timeout: float = 120) -> ServerProcess:
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, __file__, str(model_dir), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline, lines = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("listening on "):
            return ServerProcess(proc, int(line.split()[-1]))
    proc.kill()
    raise RuntimeError("the endpoint server did not start:\n" + "".join(lines)[-4000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default="")
    args = parser.parse_args()
    server = serve(args.model_dir, args.port, args.key)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
