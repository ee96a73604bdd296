"""A stand-in for API Gateway's AWS_IAM authorizer, in front of `cargo lambda watch`.

`cargo lambda watch` routes HTTP to the functions but authenticates nothing: it passes a SigV4
signature on unchecked and puts no IAM identity in the event. This stand-in does, on loopback,
what API Gateway does before the admin function runs:

- refuses a request without a SigV4 `Authorization` header (403 "Missing Authentication Token"),
  with an unknown access key, a scope other than this region's `execute-api`, a timestamp more
  than 5 minutes off, a path not in normal form (`//`, `..`), or a signature that does not
  match the request (403, nothing invoked);
- otherwise invokes the function through the watch server's Lambda invoke endpoint with a REST
  proxy event whose `requestContext.identity` carries the signer's ARN, and returns its answer.

The signature is recomputed with botocore's SigV4 implementation over exactly the headers the
request says it signed, its path, query and body. It proves the flow (signed request → IAM
identity → admin function), not AWS's verifier itself.
"""

import datetime
import hashlib
import hmac
import json
import threading
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "us-east-1"
SERVICE = "execute-api"
STAGE = "prod"
MAX_SKEW = datetime.timedelta(minutes=5)


class Refused(Exception):
    """A request API Gateway would refuse before the function runs."""


def verify(method, url, headers, body, principals, now):
    """The ARN of the principal that signed this request, or `Refused`.

    `headers` has lower-case names; `principals` maps an access key id to (secret, ARN)."""
    authorization = headers.get("authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        raise Refused("Missing Authentication Token")
    fields = {}
    for part in authorization[len("AWS4-HMAC-SHA256 "):].split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    try:
        access_key, date, region, service, terminator = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
    except (KeyError, ValueError):
        raise Refused("Authorization header requires Credential, SignedHeaders and Signature")
    if (region, service, terminator) != (REGION, SERVICE, "aws4_request"):
        raise Refused(f"Credential should be scoped to a valid region and to {SERVICE}")
    if access_key not in principals:
        raise Refused("The security token included in the request is invalid.")
    amz_date = headers.get("x-amz-date", "")
    try:
        at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise Refused("X-Amz-Date is missing or malformed")
    if date != amz_date[:8] or abs(now - at) > MAX_SKEW:
        raise Refused("Signature expired")
    if "host" not in signed or any(h not in headers for h in signed):
        raise Refused("SignedHeaders must include host and name only headers the request has")
    if "x-amz-content-sha256" in headers and headers["x-amz-content-sha256"] != hashlib.sha256(body).hexdigest():
        raise Refused("The provided x-amz-content-sha256 header does not match what was computed.")
    secret, arn = principals[access_key]
    request = AWSRequest(method=method, url=url, data=body, headers={h: headers[h] for h in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret), SERVICE, REGION)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, signature):
        raise Refused("The request signature we calculated does not match the signature you provided.")
    return arn, access_key


def rest_event(method, path, query, headers, body, arn, access_key):
    """The REST proxy event API Gateway builds behind AWS_IAM."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": arn.split(":")[4],
            "resourceId": "local",
            "stage": STAGE,
            "requestId": str(uuid.uuid4()),
            "identity": {"userArn": arn, "accessKey": access_key, "sourceIp": "127.0.0.1",
                         "caller": access_key, "user": access_key},
            "resourcePath": path,
            "httpMethod": method,
            "apiId": "local",
            "path": path,
        },
        "body": body.decode() if body else None,
        "isBase64Encoded": False,
    }


class IamGateway:
    """Serves on a random loopback port until `close`; forwards to `function` at `lambda_url`."""

    def __init__(self, lambda_url, function, principals, timeout):
        gateway = self
        self.invocations = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                url = f"http://{headers.get('host', '')}{self.path}"
                split = urllib.parse.urlsplit(url)
                now = datetime.datetime.now(datetime.timezone.utc)
                try:
                    # The signature covers the normalised path: forward only a path that is
                    # its own normal form, so what was signed is what the function sees.
                    if SigV4Auth._normalize_url_path(None, split.path) != split.path:
                        raise Refused("The request path is not in normal form")
                    arn, access_key = verify(self.command, url, headers, body, principals, now)
                except Refused as refused:
                    return self._answer(403, {"content-type": "application/json"},
                                        json.dumps({"message": str(refused)}).encode())
                query = urllib.parse.parse_qs(split.query)
                event = rest_event(self.command, split.path, query, headers, body, arn, access_key)
                gateway.invocations += 1
                invoke = urllib.request.Request(
                    f"{lambda_url}/2015-03-31/functions/{function}/invocations",
                    data=json.dumps(event).encode(), method="POST")
                with urllib.request.urlopen(invoke, timeout=timeout) as response:
                    proxy = json.loads(response.read())
                answer = proxy.get("body") or ""
                self._answer(proxy["statusCode"], proxy.get("headers") or {}, answer.encode())

            def _answer(self, status, headers, body):
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def signed(method, url, access_key, secret, body=None, headers=None, sign_body=None, at=None):
    """A urllib request signed with SigV4 for `execute-api` as a client (curl, boto3) signs it;
    `sign_body` signs other bytes than those sent (a tampered request), `at` another time."""
    data = None if body is None else json.dumps(body).encode()
    host = urllib.parse.urlsplit(url).netloc
    all_headers = {"host": host, **(headers or {})}
    if data is not None:
        all_headers["content-type"] = "application/json"
    to_sign = AWSRequest(method=method, url=url, headers=dict(all_headers),
                         data=data if sign_body is None else json.dumps(sign_body).encode())
    signer = SigV4Auth(Credentials(access_key, secret), SERVICE, REGION)
    if at is None:
        signer.add_auth(to_sign)
    else:
        to_sign.context["timestamp"] = at.strftime("%Y%m%dT%H%M%SZ")
        to_sign.headers["X-Amz-Date"] = to_sign.context["timestamp"]
        canonical = signer.canonical_request(to_sign)
        sig = signer.signature(signer.string_to_sign(to_sign, canonical), to_sign)
        scope = signer.scope(to_sign)
        signed_headers = signer.signed_headers(signer.headers_to_sign(to_sign))
        to_sign.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={signed_headers}, Signature={sig}")
    return urllib.request.Request(url, data=data, method=method, headers=dict(to_sign.headers.items()))


def send(request, timeout):
    """(status, parsed JSON body) of `request`."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
