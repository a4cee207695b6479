"""Model-server endpoints cannot be turned against the server (issue 24, points 1 and 2).

A project admin (not staff) registers endpoints by URL and names the variable that holds the key; the
workers then connect. Attacks tried here, against real HTTP servers on loopback:
- naming SECRET_KEY or DATABASE_URL as the key's variable, so the worker sends it to the admin's server;
- pointing base_url at loopback, link-local (cloud metadata) or private hosts, or moving a name to
  such an address after the check (DNS rebinding);
- a `?` swallowing the /chat/completions suffix, credentials in the URL;
- a server answering a redirect to an internal host, a huge body, or an error whose body is whatever an
  internal service holds (it must not come back in the run's error).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from labeling.models import ComparisonTask, Response
from tests.training.conftest import import_prompts
from training.ml.endpoint import EndpointConfig, EndpointError, EndpointPolicy, endpoint_generate
from training.ml.netguard import AllowList
from training.models import ModelVersion, TrainingRun
from training.services.candidates import candidates_generate
from training.services.runs import run_create
from training.services.versions import model_version_register

LEAK = "sk-live-INTERNAL-0123456789"  # what an internal service's answer might hold


class Server:
    """A tiny OpenAI-compatible server on loopback whose behaviour is chosen by the path's first part:
    /ok (answers), /redirect/<port> (303 to another server), /huge (an endless body), /leak/<status>
    (an error whose body and reason phrase hold LEAK), /long (a response text of 50,000 characters).
    Every request is recorded: method, path, Host and Authorization headers."""

    def __init__(self):
        self.seen: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _record(self) -> list[str]:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.seen.append({"method": self.command, "path": self.path, "host": self.headers.get("Host"),
                                    "authorization": self.headers.get("Authorization"), "body": body})
                return [p for p in self.path.split("/") if p]

            def _json(self, status: int, payload: dict, reason: str | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status, reason)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _choices(self, content: str) -> dict:
                n = int(server.seen[-1]["body"].get("n") or 1)
                return {"choices": [{"index": i, "message": {"role": "assistant", "content": f"{i}: {content}"}}
                                    for i in range(n)]}

            def do_GET(self):
                self._record()
                self._json(200, {"internal": LEAK})

            def do_POST(self):
                parts = self._record()
                if parts[0] == "redirect":
                    self.send_response(303)
                    self.send_header("Location", f"http://127.0.0.1:{parts[1]}/internal/v1/chat/completions")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts[0] == "huge":  # no Content-Length: only a streaming cap stops this
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    chunk = b"x" * 65536
                    try:
                        self.wfile.write(b'{"choices": [{"message": {"content": "')
                        for _ in range(8 * 16):  # 8 MiB
                            self.wfile.write(chunk)
                        self.wfile.write(b'"}}]}')
                    except OSError:
                        pass  # the client hung up at its cap
                elif parts[0] == "leak":
                    self._json(int(parts[1]), {"error": {"message": f"internal token {LEAK}"}}, reason=LEAK)
                elif parts[0] == "long":
                    self._json(200, self._choices("y" * 50_000))
                else:
                    self._json(200, self._choices(f"answer from {parts[0]}"))

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def base(self, route: str = "ok", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{route}/v1"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def internal():
    """Another loopback server standing for an internal service that must never be reached."""
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def env(settings, tmp_path):
    """The operator's defaults (no allow-list, the default key prefix), files under tmp_path."""
    settings.PAIRWISE_MODELS_DIR = tmp_path / "models"
    settings.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = ""
    settings.PAIRWISE_ENDPOINT_KEY_ENV_PREFIX = "PAIRWISE_ENDPOINT_KEY_"
    return settings


@pytest.fixture
def admin_api(project_factory, member):
    """(project, an API client of a project admin who is not staff)."""
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    user = member(project, "admin")
    assert not user.is_staff and not user.is_superuser
    client = APIClient()
    client.force_authenticate(user)
    return project, client


def register(client: APIClient, project, **fields):
    body = {"name": f"ep-{time.monotonic_ns()}", "model": "m", **fields}
    return client.post(f"/api/training/projects/{project.slug}/endpoints/", body, format="json")


def stored_endpoint(project, base_url: str, api_key_env: str = "", **extra) -> ModelVersion:
    """An endpoint version written straight to the registry, as one stored before the checks existed."""
    endpoint = {"base_url": base_url, "model": "m", "api_key_env": api_key_env, "temperature": None, "top_p": None,
                "max_tokens": None, "concurrency": 1, "timeout_s": 10, "retries": 1, "backoff_s": 0.01, **extra}
    folder = Path(settings.PAIRWISE_MODELS_DIR) / f"old-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    (folder / "endpoint.json").write_text(json.dumps({"endpoint": endpoint}))
    return model_version_register(project=project, kind=ModelVersion.Kind.POLICY, name=f"old-{time.monotonic_ns()}",
                                  base=base_url, artifact_path=folder, config={"endpoint": endpoint})


def generate_from(project, version: ModelVersion) -> TrainingRun:
    import_prompts(project, 2)
    run = run_create(project=project, kind=TrainingRun.Kind.CANDIDATES, base_version=version, params={"max_prompts": 2})
    candidates_generate(run_id=run.pk)
    run.refresh_from_db()
    return run


# ------------------------------------------------------------------------------------ secrets

@pytest.mark.django_db
@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "PAIRWISE_ENDPOINT_KEY_"])
def test_a_project_admin_cannot_name_a_worker_variable_as_the_key(env, admin_api, server, monkeypatch, variable):
    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"  # only the key is wrong here
    monkeypatch.setenv(variable, "value-that-must-stay-home")
    project, client = admin_api
    answer = register(client, project, base_url=server.base(), api_key_env=variable)
    assert answer.status_code == 400, answer.content
    assert set(answer.json()) == {"api_key_env"} and "PAIRWISE_ENDPOINT_KEY_" in answer.json()["api_key_env"][0]
    assert not ModelVersion.objects.filter(project=project).exists()

    # A variable with the operator's prefix is the way; its value is sent to the endpoint and shown nowhere.
    secret = f"sk-{time.monotonic_ns()}"
    monkeypatch.setenv("PAIRWISE_ENDPOINT_KEY_VLLM", secret)
    made = register(client, project, base_url=server.base("leak/401"), api_key_env="PAIRWISE_ENDPOINT_KEY_VLLM")
    assert made.status_code == 201 and secret not in made.content.decode()
    run = generate_from(project, ModelVersion.objects.get(pk=made.json()["id"]))
    assert run.status == TrainingRun.Status.FAILED and server.seen[0]["authorization"] == f"Bearer {secret}"
    shown = [client.get(f"/api/training/projects/{project.slug}/runs/{run.pk}/").content.decode(),
             client.get(f"/api/training/projects/{project.slug}/versions/").content.decode(), run.error, run.log_tail]
    assert all(secret not in text for text in shown)


@pytest.mark.django_db
@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL"])
def test_an_endpoint_stored_with_a_worker_variable_sends_nothing(env, project_factory, server, monkeypatch, variable):
    """Checked again on the worker: an endpoint stored before the rule never sends that variable."""
    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"
    secret = f"value-of-{variable}-{time.monotonic_ns()}"
    monkeypatch.setenv(variable, secret)
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    run = generate_from(project, stored_endpoint(project, server.base(), api_key_env=variable))

    assert run.status == TrainingRun.Status.FAILED
    assert "api_key_env must start with PAIRWISE_ENDPOINT_KEY_" in run.error, run.error
    assert server.seen == []  # not one request, so no Authorization header went out
    assert secret not in json.dumps([run.error, run.log_tail, run.params], default=str)


# ------------------------------------------------------------------------------------ SSRF at registration

INTERNAL_URLS = [
    "http://127.0.0.1:9/v1", "http://localhost:9/v1", "http://[::1]:9/v1", "http://0.0.0.0:9/v1",
    "http://169.254.169.254/latest", "http://[fe80::1]/v1", "http://10.1.2.3:8000/v1", "http://172.16.0.5/v1",
    "http://192.168.1.5/v1", "http://[fd00::5]/v1", "http://224.0.0.1/v1", "http://[::ffff:127.0.0.1]:9/v1",
    "http://2130706433:9/v1",  # 127.0.0.1 as one number
]
ALLOW_ALL_INTERNAL = "127.0.0.0/8,::1/128,0.0.0.0/32,169.254.0.0/16,fe80::/10,10.0.0.0/8,172.16.0.0/12," \
                     "192.168.0.0/16,fc00::/7,224.0.0.0/4"


@pytest.mark.django_db
@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_hosts_are_refused_unless_the_operator_allows_them(env, admin_api, url):
    project, client = admin_api
    refused = register(client, project, base_url=url)
    assert refused.status_code == 400, refused.content
    assert set(refused.json()) == {"base_url"} and "PAIRWISE_ENDPOINT_ALLOWED_NETWORKS" in refused.json()["base_url"][0]
    assert not ModelVersion.objects.filter(project=project).exists()

    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = ALLOW_ALL_INTERNAL
    assert register(client, project, base_url=url).status_code == 201


@pytest.mark.django_db
def test_an_allowed_host_name_may_be_internal_and_other_names_may_not(env, admin_api):
    project, client = admin_api
    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "10.0.0.0/8, localhost"
    assert register(client, project, base_url="http://localhost:9/v1").status_code == 201
    assert register(client, project, base_url="http://10.9.9.9/v1").status_code == 201
    assert register(client, project, base_url="http://192.168.1.5/v1").status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("url, said", [
    ("https://api.example.com/v1?x=", "? or #"), ("https://api.example.com/v1#frag", "? or #"),
    ("https://user:pw@api.example.com/v1", "credentials"),
])
def test_urls_that_would_go_elsewhere_are_refused(env, admin_api, url, said):
    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "api.example.com"  # the host is not what is wrong
    project, client = admin_api
    answer = register(client, project, base_url=url)
    assert answer.status_code == 400 and said in answer.json()["base_url"][0], answer.content


# ------------------------------------------------------------------------------------ SSRF at every connection

@pytest.mark.django_db
def test_an_endpoint_is_checked_again_when_the_worker_connects(env, project_factory, server):
    """Registered while the operator allowed loopback; the allow-list has since dropped it."""
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    run = generate_from(project, stored_endpoint(project, server.base()))
    assert run.status == TrainingRun.Status.FAILED and "loopback" in run.error, run.error
    assert server.seen == []

    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"
    other = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    ok = generate_from(other, stored_endpoint(other, server.base()))
    assert ok.status == TrainingRun.Status.SUCCEEDED, ok.error
    assert Response.objects.filter(prompt__project=other).exists() and len(server.seen) >= 2


@pytest.mark.django_db
def test_a_redirect_is_not_followed(env, project_factory, server, internal):
    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    run = generate_from(project, stored_endpoint(project, server.base(f"redirect/{internal.port}")))
    assert run.status == TrainingRun.Status.FAILED and "answered 303" in run.error, run.error
    assert internal.seen == []  # not followed
    assert 1 <= len(server.seen) <= 2  # at most one per prompt: a 3xx is not retried (retries=1 would give 4)
    assert not ComparisonTask.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_a_huge_answer_is_cut_at_the_cap(env, project_factory, server):
    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"
    env.PAIRWISE_ENDPOINT_MAX_RESPONSE_BYTES = 256 * 1024
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    run = generate_from(project, stored_endpoint(project, server.base("huge")))
    assert run.status == TrainingRun.Status.FAILED and f"larger than {256 * 1024} bytes" in run.error, run.error
    assert not Response.objects.filter(prompt__project=project).exists()


@pytest.mark.django_db
def test_response_texts_are_cut_at_the_text_cap(env, project_factory, server):
    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"
    env.PAIRWISE_MAX_TEXT_CHARS = 1000
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    run = generate_from(project, stored_endpoint(project, server.base("long")))
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    texts = [r.text for r in Response.objects.filter(prompt__project=project)]
    assert texts and max(len(t) for t in texts) == 1000


@pytest.mark.django_db
@pytest.mark.parametrize("status, said", [(400, "answered 400: Bad Request"),
                                          (500, "answered 500 after 2 attempts: Internal Server Error")])
def test_an_error_body_never_lands_in_the_run(env, project_factory, server, status, said):
    env.PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = "127.0.0.1/32"
    project = project_factory(responses_per_task=2, gen_max_new_tokens=6)
    run = generate_from(project, stored_endpoint(project, server.base(f"leak/{status}")))
    assert run.status == TrainingRun.Status.FAILED and said in run.error, run.error
    assert "INTERNAL" not in json.dumps([run.error, run.log_tail, run.params], default=str)


# ------------------------------------------------------------------------------------ DNS rebinding

class FlippingResolver:
    """A DNS that answers the checked address first and an internal one afterwards."""

    def __init__(self, *answers: list[str]):
        self.answers, self.calls = list(answers), []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def test_the_connection_goes_to_the_checked_address(server):
    """The name resolves once per request; the request goes to that checked address with the name in
    the Host header, and a later answer pointing inside is refused before any connection."""
    resolver = FlippingResolver(["127.0.0.1"], ["169.254.169.254"])
    policy = EndpointPolicy(allowed=AllowList.parse("127.0.0.1/32"), resolver=resolver)
    config = EndpointConfig(base_url=server.base(host="models.example.com"), model="m", retries=0, concurrency=1)

    assert endpoint_generate(config, ["a?"], k=1, policy=policy) == [["0: answer from ok"]]
    assert resolver.calls == ["models.example.com"]  # resolved once, and that answer was used
    assert server.seen[0]["host"] == f"models.example.com:{server.port}"

    with pytest.raises(EndpointError, match=r"models.example.com \(169.254.169.254\) is a link-local address"):
        endpoint_generate(config, ["b?"], k=1, policy=policy)
    assert len(server.seen) == 1


def test_a_name_with_one_internal_answer_among_public_ones_is_refused(server):
    resolver = FlippingResolver(["93.184.216.34", "10.0.0.7"])
    policy = EndpointPolicy(resolver=resolver)
    config = EndpointConfig(base_url="http://models.example.com/v1", model="m", retries=0)
    with pytest.raises(EndpointError, match=r"\(10.0.0.7\) is a private address"):
        endpoint_generate(config, ["a?"], k=1, policy=policy)
    assert policy.problems({"base_url": config.base_url})["base_url"].startswith("models.example.com (10.0.0.7)")
