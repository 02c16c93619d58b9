"""moto's S3 server as strict as S3 about who signs a request and for which region.

moto checks SigV4 signatures only once its IAM authentication is on (``/moto-api/reset-auth``, the server-mode
form of ``INITIAL_NO_AUTH_ACTION_COUNT``); :func:`start` turns it on after making an IAM user with an S3-only
policy and its access key, so a wrong secret key answers ``SignatureDoesNotMatch`` and an unknown access key
``InvalidAccessKeyId``, as on S3.

Two things S3 does that moto does not are added by a small WSGI layer in front of moto (:class:`StrictS3`):

- A request signed for another region than the bucket's is refused with ``AuthorizationHeaderMalformed``
  (moto signs and checks with whatever region the request names). GetBucketLocation is exempt, as on S3: it is
  how a client without a region finds the bucket's.
- A presigned URL (query-string signature) is checked -- access key, signature, region, expiry -- and then
  handed to moto as a header-signed request, because moto with authentication on cannot serve one (it reads
  an ``Authorization`` header the URL does not have and answers 500). The check uses botocore's signer, not
  minio's, so it does not share a bug with the client under test.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import boto3
import requests
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from werkzeug.serving import BaseWSGIServer, make_server

REGION = "eu-central-1"  # not us-east-1, the region a client falls back to when it has none
S3_ONLY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                  "X-Amz-Signature", "X-Amz-Security-Token")


@dataclass(frozen=True)
class S3Server:
    """Where the server listens and the credentials of the IAM user made for the tests."""

    endpoint: str
    host: str
    access_key: str
    secret_key: str
    region: str = REGION
    _keys: Callable[[], tuple[str, str]] | None = field(default=None, repr=False, compare=False)

    def minio(self):  # noqa: ANN201 - test helper
        from minio import Minio

        return Minio(self.host, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                     region=self.region)

    def boto3(self):  # noqa: ANN201 - test helper
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def new_key(self) -> tuple[str, str]:
        """Another (access key, secret key) allowed to use S3: a new IAM user's."""
        assert self._keys is not None
        return self._keys()

    def through(self, endpoint: str, host: str) -> S3Server:
        """The same credentials, reached at another address (a proxy in front of the server)."""
        return replace(self, endpoint=endpoint, host=host)


def _s3_error(start_response: Callable, status: str, code: str, message: str, **extra: str) -> Iterable[bytes]:
    fields = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in extra.items())
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}'
            f"</Message>{fields}<RequestId>qbm-test</RequestId></Error>").encode()
    start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


class StrictS3:
    """The WSGI layer in front of moto: region check and presigned URLs (see the module's docstring)."""

    def __init__(self, app: Callable, secret_of: Callable[[str], str | None],
                 bucket_region: Callable[[str], str | None]) -> None:
        self._app = app
        self._secret_of = secret_of
        self._bucket_region = bucket_region

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        raw_path = environ.get("RAW_URI", environ.get("PATH_INFO", "/")).split("?", 1)[0]
        query = environ.get("QUERY_STRING", "")
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        bucket = urllib.parse.unquote(raw_path.lstrip("/").split("/", 1)[0])
        presigned = "X-Amz-Signature" in params and "HTTP_AUTHORIZATION" not in environ
        if presigned:
            credential = params.get("X-Amz-Credential", [""])[0]
        else:
            credential = environ.get("HTTP_AUTHORIZATION", "").partition("Credential=")[2].partition(",")[0]
        scope = credential.split("/")
        region = scope[2] if len(scope) == 5 else None
        if region and bucket and "location" not in params:
            expected = self._bucket_region(bucket)
            if expected and expected != region:
                return _s3_error(start_response, "400 Bad Request", "AuthorizationHeaderMalformed",
                                 f"The authorization header is malformed; the region '{region}' is wrong; "
                                 f"expecting '{expected}'", Region=expected)
        if presigned:
            refusal = self._check_presigned(environ, raw_path, query, params, scope)
            if refusal:
                return _s3_error(start_response, "403 Forbidden", *refusal)
            self._sign_in_header(environ, raw_path, query, scope)
        return self._app(environ, start_response)

    def _check_presigned(self, environ: dict[str, Any], raw_path: str, query: str, params: dict[str, list[str]],
                         scope: list[str]) -> tuple[str, str] | None:
        secret = self._secret_of(scope[0]) if len(scope) == 5 else None
        if secret is None:
            return "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
        signed_at = params.get("X-Amz-Date", [""])[0]
        try:
            start = datetime.strptime(signed_at, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            expires = timedelta(seconds=int(params.get("X-Amz-Expires", ["0"])[0]))
        except ValueError:
            return "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires is not valid."
        if datetime.now(UTC) > start + expires:
            return "AccessDenied", "Request has expired"
        unsigned = "&".join(pair for pair in query.split("&") if not pair.startswith("X-Amz-Signature="))
        headers = {name: environ.get("HTTP_" + name.upper().replace("-", "_"), "")
                   for name in params.get("X-Amz-SignedHeaders", ["host"])[0].split(";")}
        request = AWSRequest(method=environ["REQUEST_METHOD"], url=f"http://{environ['HTTP_HOST']}{raw_path}?{unsigned}",
                             headers=headers)
        request.context["timestamp"] = signed_at
        auth = S3SigV4QueryAuth(Credentials(scope[0], secret), scope[3], scope[2])
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        if expected != params["X-Amz-Signature"][0]:
            return ("SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                    "you provided. Check your key and signing method.")
        return None

    def _sign_in_header(self, environ: dict[str, Any], raw_path: str, query: str, scope: list[str]) -> None:
        """Turn a checked presigned request into the header-signed form moto checks itself."""
        rest = "&".join(pair for pair in query.split("&") if pair and pair.split("=", 1)[0] not in PRESIGN_PARAMS)
        url = f"http://{environ['HTTP_HOST']}{raw_path}" + (f"?{rest}" if rest else "")
        request = AWSRequest(method=environ["REQUEST_METHOD"], url=url, headers={"host": environ["HTTP_HOST"]})
        S3SigV4Auth(Credentials(scope[0], self._secret_of(scope[0])), scope[3], scope[2]).add_auth(request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256"):
            environ["HTTP_" + name.upper().replace("-", "_")] = request.headers[name]
        environ["QUERY_STRING"] = rest
        environ["RAW_URI"] = environ["REQUEST_URI"] = raw_path + (f"?{rest}" if rest else "")


class MotoServer:
    """moto's whole server (S3, IAM, ...) behind :class:`StrictS3`, on a free local port, on a thread.

    All servers in a process share moto's state (buckets, IAM users), like ``ThreadedMotoServer``'s.
    """

    def __init__(self, secret_of: Callable[[str], str | None]) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        app = StrictS3(DomainDispatcherApplication(create_backend_app), secret_of, _bucket_region)
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True,
                                                   request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._stopped = False

    def start(self) -> MotoServer:
        self._thread.start()
        return self

    def get_host_and_port(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()


def _bucket_region(bucket: str) -> str | None:
    from moto.s3.models import s3_backends

    for account in list(s3_backends.keys()):
        for partition in list(s3_backends[account].keys()):
            found = s3_backends[account][partition].buckets.get(bucket)
            if found is not None:
                return found.region_name
    return None


class Keys:
    """The access keys the fixture made (IAM users with an S3-only policy), for presigned URL checks."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._secrets: dict[str, str] = {}
        self._iam: Any = None
        self._lock = threading.Lock()

    def secret_of(self, access_key: str) -> str | None:
        return self._secrets.get(access_key)

    def make(self) -> tuple[str, str]:
        with self._lock:
            if self._iam is None:  # the first user is made before authentication is on: it is the admin
                self._iam = self._client("bootstrap", "bootstrap")
                self._iam.create_user(UserName="qbm-admin")
                self._iam.put_user_policy(UserName="qbm-admin", PolicyName="all", PolicyDocument=json.dumps(
                    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
                admin = self._iam.create_access_key(UserName="qbm-admin")["AccessKey"]
                self._iam = self._client(admin["AccessKeyId"], admin["SecretAccessKey"])
                answer = requests.post(f"{self._endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
                answer.raise_for_status()
            name = f"qbm-{len(self._secrets)}"
            self._iam.create_user(UserName=name)
            self._iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(S3_ONLY))
            key = self._iam.create_access_key(UserName=name)["AccessKey"]
            self._secrets[key["AccessKeyId"]] = key["SecretAccessKey"]
            return key["AccessKeyId"], key["SecretAccessKey"]

    def _client(self, access_key: str, secret_key: str) -> Any:
        return boto3.client("iam", endpoint_url=self._endpoint, region_name="us-east-1",
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key)


@dataclass
class Moto:
    """A running server with authentication on, the first S3 user's credentials, and the keys made so far."""

    server: MotoServer
    s3: S3Server
    keys: Keys

    def second_server(self) -> MotoServer:
        """Another server on the same moto state (a test may stop it midway)."""
        return MotoServer(self.keys.secret_of).start()

    def stop(self) -> None:
        self.server.stop()


def start() -> Moto:
    holder: dict[str, Keys] = {}
    server = MotoServer(lambda access_key: holder["keys"].secret_of(access_key)).start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = holder["keys"] = Keys(endpoint)
    access_key, secret_key = keys.make()
    return Moto(server, S3Server(endpoint, f"{host}:{port}", access_key, secret_key, _keys=keys.make), keys)
