"""The five function binaries under `cargo lambda watch`, end to end (infra/test.sh runs it).

`cargo lambda watch` emulates the Lambda runtime API and routes the REST API's paths to the
functions ([workspace.metadata.lambda.watch.router] in Cargo.toml). The functions run on
DynamoDB in moto with the real OpenAI and Anthropic adapters pointed at the provider stand-ins
and the Qdrant adapter at the Qdrant stand-in. The tenant and its key were created with the
`tollgate` CLI. The admin function is reached with SigV4-signed requests through
`iam_gateway.py`, a stand-in for API Gateway's AWS_IAM authorizer. Environment (set by
infra/test.sh):

- LAMBDA_URL: the watch server, e.g. http://127.0.0.1:9000
- TENANT_KEY: the key `tollgate key create` printed
- REPO_ROOT, CARGO_LAMBDA: to run `cargo lambda invoke` for the scheduler
"""

import datetime
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid

import openai
import pytest

URL = os.environ["LAMBDA_URL"]
KEY = os.environ["TENANT_KEY"]
# The first request to each function compiles it (debug build): be patient.
FIRST_CALL_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=f"{URL}/v1", api_key=KEY, timeout=FIRST_CALL_TIMEOUT, max_retries=0)


class Reply:
    def __init__(self, status_code, text):
        self.status_code = status_code
        self.text = text

    def json(self):
        return json.loads(self.text)


def http(method, path, json_body=None, params=None):
    url = f"{URL}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = None if json_body is None else json.dumps(json_body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("authorization", f"Bearer {KEY}")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=FIRST_CALL_TIMEOUT) as response:
            return Reply(response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.read().decode())


def test_buffered_chat_through_the_invoke_binary(client):
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello from cargo lambda"}]
    )
    assert reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def test_streamed_chat_arrives_in_chunks_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="claude-haiku",
            messages=[{"role": "user", "content": "Stream something"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert len(chunks) > 2
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_ingest_then_chat_grounded_in_the_document(client):
    doc_id = f"handbook-{uuid.uuid4().hex[:8]}"
    stored = http(
        "POST",
        "/v1/documents",
        json_body={
            "id": doc_id,
            "title": "Refund policy",
            "text": "Refunds are issued within 14 days of purchase. The refund desk is on floor 7.",
        },
    )
    assert stored.status_code == 200, stored.text
    listed = http("GET", "/v1/documents")
    assert listed.status_code == 200, listed.text
    assert doc_id in listed.text

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Within how many days are refunds issued?"}],
        extra_body={"retrieval": True},
    )
    assert doc_id in raw.headers.get("x-tollgate-documents", ""), dict(raw.headers)
    assert raw.parse().choices[0].message.content


def test_usage_report_counts_the_calls():
    report = http("GET", "/v1/usage")
    assert report.status_code == 200, report.text
    body = report.json()
    text = json.dumps(body)
    # At least the three chats above; cost is a decimal string, never a float.
    totals = body.get("totals") or body.get("total") or {}
    assert totals.get("requests", 0) >= 3, text[:2000]
    assert isinstance(totals.get("cost_usd"), str), text[:2000]
    events = http("GET", "/v1/usage/events", params={"limit": 10})
    assert events.status_code == 200, events.text
    assert len(events.json()["data"]) >= 3


def test_the_scheduler_checks_this_hours_active_tenants(tmp_path):
    # An EventBridge "Scheduled Event" an hour from now: the scheduler checks the last full
    # hour before the event's time, i.e. the current hour, in which the calls above happened.
    root = os.environ["REPO_ROOT"]
    with open(os.path.join(root, "functions/anomaly-scheduler/events/scheduled.json")) as f:
        event = json.load(f)
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    event["time"] = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    fixture = tmp_path / "scheduled.json"
    fixture.write_text(json.dumps(event))
    port = URL.rsplit(":", 1)[1]
    out = subprocess.run(
        [os.environ["CARGO_LAMBDA"], "lambda", "invoke", "anomaly-scheduler",
         "--data-file", str(fixture), "--invoke-address", "127.0.0.1", "--invoke-port", port,
         "--output-format", "json"],
        cwd=root, capture_output=True, text=True, timeout=FIRST_CALL_TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["tenants_checked"] >= 1, summary


def test_the_scheduler_takes_a_budget_event_stream_batch():
    # The usage table's stream, as the template filters it, delivers new BUDGET# items. The
    # fixture's event was never recorded in this deployment's outbox, so it is skipped, not sent.
    root = os.environ["REPO_ROOT"]
    port = URL.rsplit(":", 1)[1]
    out = subprocess.run(
        [os.environ["CARGO_LAMBDA"], "lambda", "invoke", "anomaly-scheduler",
         "--data-file", os.path.join(root, "functions/anomaly-scheduler/events/budget-stream.json"),
         "--invoke-address", "127.0.0.1", "--invoke-port", port, "--output-format", "json"],
        cwd=root, capture_output=True, text=True, timeout=FIRST_CALL_TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary == {"sent": 0, "skipped": 1, "resets_recorded": 0}, summary


def invoke_admin(fixture):
    """The admin binary given an API Gateway REST event as its AWS_IAM authorizer passes one
    on (the caller's ARN in requestContext.identity): its proxy response."""
    root = os.environ["REPO_ROOT"]
    port = URL.rsplit(":", 1)[1]
    out = subprocess.run(
        [os.environ["CARGO_LAMBDA"], "lambda", "invoke", "admin",
         "--data-file", os.path.join(root, "functions/admin/events", fixture),
         "--invoke-address", "127.0.0.1", "--invoke-port", port, "--output-format", "json"],
        cwd=root, capture_output=True, text=True, timeout=FIRST_CALL_TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_admin_refuses_a_signed_request_no_authorizer_checked():
    # `cargo lambda watch` is not API Gateway: it passes a SigV4 signature on unchecked and puts
    # no IAM identity in the event. The admin function refuses such a request, as it would be
    # refused anywhere but behind the AWS_IAM authorizer.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{URL}/admin/v1/tenants"
    signed = AWSRequest(method="GET", url=url, headers={"host": URL.split("://", 1)[1]})
    SigV4Auth(Credentials("AKIDEXAMPLE", "not-a-real-secret"), "execute-api", "us-east-1").add_auth(signed)
    request = urllib.request.Request(url, method="GET", headers=dict(signed.headers.items()))
    try:
        with urllib.request.urlopen(request, timeout=FIRST_CALL_TIMEOUT) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    assert status == 403, body
    assert json.loads(body)["error"]["code"] == "iam_identity_required"


def test_admin_provisions_a_tenant_and_a_key_that_the_invoke_binary_serves():
    created = invoke_admin("create-tenant-rest-stage.json")
    assert created["statusCode"] == 201, created
    assert json.loads(created["body"])["tenant"]["version"] == 1
    issued = invoke_admin("create-key-rest-stage.json")
    assert issued["statusCode"] == 201, issued
    key = json.loads(issued["body"])["key"]
    tenant_client = openai.OpenAI(base_url=f"{URL}/v1", api_key=key,
                                  timeout=FIRST_CALL_TIMEOUT, max_retries=0)
    reply = tenant_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "provisioned over HTTP"}])
    assert reply.choices[0].message.content


def invoke_admin_event(method, path, resource, body=None, path_parameters=None):
    """`invoke_admin` with the key fixture's authorized REST event turned into another request."""
    import tempfile

    root = os.environ["REPO_ROOT"]
    with open(os.path.join(root, "functions/admin/events/create-key-rest-stage.json")) as f:
        event = json.load(f)
    event.update(httpMethod=method, path=f"/prod{path}", resource=resource,
                 pathParameters=path_parameters, body=None if body is None else json.dumps(body))
    event["requestContext"].update(httpMethod=method, path=f"/prod{path}", resourcePath=resource,
                                   requestId=str(uuid.uuid4()))
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=os.path.join(root, "functions/admin/events"),
                                     delete=False) as f:
        json.dump(event, f)
    try:
        return invoke_admin(os.path.basename(f.name))
    finally:
        os.unlink(f.name)


def test_admin_sets_a_budget_a_price_and_a_quota_in_dynamodb():
    # The admin binary on DynamoDB (moto): the tenant's spend counters are read for its budget,
    # and prices and quotas are written where the gateways load them.
    tenant = "lambda-budget"
    with open(os.path.join(os.environ["REPO_ROOT"],
                           "functions/admin/events/create-tenant-rest-stage.json")) as f:
        config = json.loads(json.load(f)["body"])
    config["tenant_id"] = tenant
    created = invoke_admin_event("POST", "/admin/v1/tenants", "/admin/v1/tenants", config)
    assert created["statusCode"] == 201, created
    resource = "/admin/v1/tenants/{id}/budget"
    path = f"/admin/v1/tenants/{tenant}/budget"
    got = invoke_admin_event("GET", path, resource, path_parameters={"id": tenant})
    assert got["statusCode"] == 200, got
    status = json.loads(got["body"])
    assert status["day"]["spent_usd"] in ("0", 0), status
    put = invoke_admin_event("PUT", path, resource, {"daily_usd": "7.5", "alert_at_percent": 50},
                             path_parameters={"id": tenant})
    assert put["statusCode"] == 200, put
    assert json.loads(put["body"])["in_force"]["alert_at_percent"] == 50

    price = {"provider": "openai", "model": "lambda-ft-model", "input": "3", "output": "4"}
    set_price = invoke_admin_event("PUT", "/admin/v1/prices", "/admin/v1/prices", price)
    assert set_price["statusCode"] == 200, set_price
    prices = json.loads(invoke_admin_event("GET", "/admin/v1/prices", "/admin/v1/prices")["body"])
    mine = [p for p in prices["prices"] if p["model"] == "lambda-ft-model"]
    assert [p["source"] for p in mine] == ["operator"], mine

    quota = {"provider": "anthropic", "model": "lambda-quota-model", "tokens_per_minute": 5000}
    set_quota = invoke_admin_event("PUT", "/admin/v1/quotas", "/admin/v1/quotas", quota)
    assert set_quota["statusCode"] == 200, set_quota
    quotas = json.loads(invoke_admin_event("GET", "/admin/v1/quotas", "/admin/v1/quotas")["body"])
    assert quota in quotas["quotas"], quotas


# The signed path: SigV4 requests through an AWS_IAM authorizer stand-in (iam_gateway.py)
# that verifies each signature and hands the admin binary the signer's ARN, as API Gateway does.
OPERATOR_KEY, OPERATOR_SECRET = "AKIDLOCALOPERATOR01", "local-test-signing-secret-not-aws"
OPERATOR_ARN = "arn:aws:sts::123456789012:assumed-role/backoffice/signed-e2e"


@pytest.fixture(scope="module")
def iam_gateway():
    from iam_gateway import IamGateway

    gateway = IamGateway(URL, "admin", {OPERATOR_KEY: (OPERATOR_SECRET, OPERATOR_ARN)},
                         FIRST_CALL_TIMEOUT)
    yield gateway
    gateway.close()


def test_signed_requests_provision_a_tenant_a_key_and_a_budget(iam_gateway):
    from iam_gateway import send, signed

    base = f"{iam_gateway.url}/prod/admin/v1"

    def call(method, path, body=None, headers=None):
        request = signed(method, base + path, OPERATOR_KEY, OPERATOR_SECRET, body, headers)
        return send(request, FIRST_CALL_TIMEOUT)

    with open(os.path.join(os.environ["REPO_ROOT"],
                           "functions/admin/events/create-tenant-rest-stage.json")) as f:
        config = json.loads(json.load(f)["body"])
    config["tenant_id"] = "signed-e2e"
    status, created = call("POST", "/tenants", config)
    assert status == 201, created
    status, issued = call("POST", "/tenants/signed-e2e/keys", {"scopes": ["chat"]})
    assert status == 201, issued
    status, budget = call("GET", "/tenants/signed-e2e/budget")
    assert status == 200, budget
    status, changed = call("PUT", "/tenants/signed-e2e/budget", {"daily_usd": "3"},
                           {"if-match": f'"{budget["version"]}"'})
    assert status == 200, changed
    assert changed["in_force"]["daily_usd"] in ("3", 3), changed
    status, audit = call("GET", "/audit?tenant=signed-e2e&limit=10")
    assert status == 200, audit
    actions = [(r["action"], r["actor"]) for r in audit["records"]]
    assert actions == [("tenant.update", OPERATOR_ARN), ("key.create", OPERATOR_ARN),
                       ("tenant.create", OPERATOR_ARN)], actions
    # The key serves at the gateway at once.
    tenant_client = openai.OpenAI(base_url=f"{URL}/v1", api_key=issued["key"],
                                  timeout=FIRST_CALL_TIMEOUT, max_retries=0)
    reply = tenant_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "signed provisioning"}])
    assert reply.choices[0].message.content
    # Its cost is on the day's spend counter in DynamoDB, as the budget reads it.
    status, spent = call("GET", "/tenants/signed-e2e/budget")
    assert status == 200, spent
    day = spent["day"]
    assert float(day["spent_usd"]) > 0, day
    assert abs(float(day["remaining_usd"]) - (3 - float(day["spent_usd"]))) < 1e-9, day


def test_unsigned_tampered_stale_or_unknown_requests_never_reach_the_function(iam_gateway):
    from iam_gateway import send, signed

    url = f"{iam_gateway.url}/prod/admin/v1/tenants"
    body = {"tenant_id": "never-created"}
    before = iam_gateway.invocations
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=6)
    cases = [
        (urllib.request.Request(url, method="GET"), "Missing Authentication Token"),
        (signed("POST", url, "AKIDUNKNOWN000000000", OPERATOR_SECRET, body), "security token"),
        (signed("POST", url, OPERATOR_KEY, "a-wrong-secret", body), "signature"),
        (signed("POST", url, OPERATOR_KEY, OPERATOR_SECRET, body,
                sign_body={"tenant_id": "something-else"}), "signature"),
        (signed("POST", url, OPERATOR_KEY, OPERATOR_SECRET, body, at=stale), "expired"),
        (signed("POST", url.replace("/v1/", "/v1//"), OPERATOR_KEY, OPERATOR_SECRET, body),
         "normal form"),
    ]
    for request, says in cases:
        status, answer = send(request, FIRST_CALL_TIMEOUT)
        assert status == 403, answer
        assert says in answer["message"], answer
    assert iam_gateway.invocations == before, "a refused request reached the function"
    # A signed request for the same path works: the refusals were the signatures'.
    status, listed = send(signed("GET", url, OPERATOR_KEY, OPERATOR_SECRET), FIRST_CALL_TIMEOUT)
    assert status == 200, listed
    assert "never-created" not in [t["tenant_id"] for t in listed["tenants"]]
