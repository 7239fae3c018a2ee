"""The three generators turn openapi.yaml into clients without guessing: no warning of theirs
points at the document (inline schemas they must name, references they cannot resolve,
constructs they do not support). A warning is fixed in openapi.yaml, never in the output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clients.support import GENERATORS, generate, run_generator, spec_warnings


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_generator_has_nothing_to_say_about_the_spec(kind):
    generated = generate(kind)
    assert generated.about_the_spec() == [], (
        f"{kind} warns about openapi.yaml:\n" + "\n".join(generated.about_the_spec()))


def test_generated_clients_cover_every_operation():
    python = generate("python").path / "smsleads_openapi" / "api"
    typescript = generate("typescript-fetch").path / "apis"
    httpx_client = generate("openapi-python-client").path / "smsleads_client" / "api"
    python_code = "".join(p.read_text() for p in python.glob("*.py"))
    typescript_code = "".join(p.read_text() for p in typescript.glob("*.ts"))
    modules = {p.stem for p in httpx_client.glob("*/*.py")}
    for operation in ("send_message", "preview_message", "preview_bulk", "cancel_campaign", "get_balance", "list_delivery_reports",
                      "transfer_subscriber_credits", "remove_contact", "verify_sender_ids"):
        assert f"def {operation}(" in python_code
        assert operation in modules
        camel = "".join(w.capitalize() for w in operation.split("_"))
        assert f"async {camel[0].lower()}{camel[1:]}(" in typescript_code


# A document with the faults the check exists for: two inline objects (the generator must
# invent their names) and a reference to a schema that does not exist.
INLINE = """\
openapi: 3.1.0
info: {title: faulty, version: '1'}
paths:
  /things:
    post:
      operationId: makeThing
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                inner: {type: object, properties: {a: {type: string}}}
      responses:
        '200': {description: made}
"""
UNRESOLVED = INLINE.replace("'200': {description: made}", """\
'200':
          description: made
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Missing'}""")


@pytest.mark.parametrize(("kind", "document", "expected"), [
    ("python", INLINE, "Inline schema created as makeThing_request_inner"),
    ("python", UNRESOLVED, "Error resolving schema #/components/schemas/Missing"),
    ("openapi-python-client", UNRESOLVED, "Could not find reference in parsed models"),
])
def test_the_check_lists_the_faults_it_is_for(kind, document, expected, tmp_path: Path):
    spec = tmp_path / "faulty.yaml"
    spec.write_text(document)
    _, log = run_generator(kind, spec, tmp_path / "out")
    assert any(expected in line for line in spec_warnings(log)), log
