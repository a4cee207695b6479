"""Tiny inputs for the bench scripts: a random BERT, a trivially separable preference file, and a
scripted judge served over real HTTP on loopback."""
from __future__ import annotations

import gzip
import json
import re
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from tests.endpoint_server import make_handler
from tests.tiny_models import tiny_bert


@pytest.fixture
def bert_dir(tmp_path) -> Path:
    return tiny_bert(tmp_path / "bert")


@pytest.fixture
def separable_file(tmp_path):
    """Writes n {id, prompt, chosen, rejected, source} records (shared dataset shape) to a .jsonl.gz."""
    def write(n: int) -> Path:
        path = tmp_path / "pairs.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"t/{i}", "prompt": f"question {i}?", "chosen": "good good good",
                                    "rejected": "bad bad", "source": "t"}) + "\n")
        return path
    return write


Reply = Callable[[str, int, str, str], str]
_JUDGE_ASKS = re.compile(r"\[User Question\]\n(.*)\n\n\[The Start of Assistant A's Answer\]\n(.*)\n"
                         r"\[The End of Assistant A's Answer\]\n\n\[The Start of Assistant B's Answer\]\n(.*)\n"
                         r"\[The End of Assistant B's Answer\]$", re.S)


class ScriptedJudge:
    """The state behind tests/endpoint_server.py's request handler, with scripted replies instead of a
    model's: reply(question, turn, a, b) answers the turn-th request (from 0) about a question, shown
    answers a and b (bench.loop_judge.judge_messages' layout). `seen` lists every request, as the real
    server's; `asked` the last turn per question."""

    def __init__(self, reply: Reply):
        self.reply, self.asked = reply, {}
        self.lock, self.seen, self.faults, self.key, self.name = threading.Lock(), [], {}, "", "judge"

    def generate(self, body: dict) -> list[str]:
        question, a, b = _JUDGE_ASKS.match(body["messages"][-1]["content"]).groups()
        with self.lock:
            turn = self.asked[question] = self.asked.get(question, -1) + 1
        return [self.reply(question, turn, a, b)]


@pytest.fixture
def scripted_judge():
    """start(reply) -> (its ScriptedJudge, a base_url on loopback); the servers stop after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(reply: Reply) -> tuple[ScriptedJudge, str]:
        state = ScriptedJudge(reply)
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return state, f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
