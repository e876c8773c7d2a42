"""The gateway with TLS, as the chart runs it (tls.enabled + auth.secretName): it serves HTTPS
and dials a mutual-TLS coordinator with the services' certificate and the token. Processes on
127.0.0.1 (LocalStack, `http_port`), certificates from scripts/make_certs.py."""

from __future__ import annotations

import ssl
import urllib.request

import pytest

from tests.services.test_security import make_certs

openai = pytest.importorskip("openai")
pytest.importorskip("cryptography", reason="scripts/make_certs.py needs cryptography (the dev extra)")

TOKEN = "tls-token"


def test_https_gateway_in_front_of_a_mutual_tls_coordinator(tmp_path):
    from specdec.launch.stack import LocalStack

    certs = make_certs(tmp_path / "certs")
    with LocalStack(preset="tiny", seed=0, startup_timeout_s=120, tls_dir=certs, auth_token=TOKEN,
                    http_port=0) as stack:
        assert stack.http_url.startswith("https://127.0.0.1:")
        http_client = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(certs / "ca.crt")))
        with openai.OpenAI(base_url=f"{stack.http_url}/v1", api_key=TOKEN, max_retries=0, timeout=60,
                           http_client=http_client) as client:
            reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=4)
        assert reply.usage.completion_tokens == 4
        with pytest.raises(OSError):  # plaintext HTTP to the HTTPS port gets no answer (URLError, a reset)
            urllib.request.urlopen(f"http://{stack.gateway.address}/health", timeout=10)
