"""training.ml.endpoint over TLS: the connection goes to the checked address, yet the certificate is
verified for the URL's host name (SNI and hostname check), against a real TLS server on loopback
with a certificate made for the test by the openssl command."""
from __future__ import annotations

import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training.ml.endpoint import EndpointConfig, EndpointError, EndpointPolicy, endpoint_generate
from training.ml.netguard import AllowList

NAME = "models.example.com"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}"],
                   check=True, capture_output=True)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = json.dumps({"choices": [{"message": {"content": f"host {self.headers['Host']}"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], cert
    server.shutdown()
    server.server_close()


def policy() -> EndpointPolicy:
    return EndpointPolicy(allowed=AllowList.parse("127.0.0.1/32"), resolver=lambda host, port: ["127.0.0.1"])


def test_tls_to_the_checked_address_verifies_the_name(tls_server, monkeypatch):
    port, cert = tls_server
    config = EndpointConfig(base_url=f"https://{NAME}:{port}/v1", model="m", retries=0)
    with pytest.raises(EndpointError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted yet
        endpoint_generate(config, ["a?"], k=1, policy=policy())

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    assert endpoint_generate(config, ["a?"], k=1, policy=policy()) == [[f"host {NAME}:{port}"]]

    other = EndpointConfig(base_url=f"https://other.example.com:{port}/v1", model="m", retries=0)
    with pytest.raises(EndpointError, match="SSLError"):  # same address, a name the certificate is not for
        endpoint_generate(other, ["a?"], k=1, policy=policy())
