# The local AWS emulator: moto's whole server (every service on one port),
# handling one request at a time.
#
# `moto_server` handles requests on threads at once, and moto's DynamoDB
# checks a condition and then writes without a lock, so two concurrent
# conditional writes could both succeed, which DynamoDB never allows. Here
# one lock admits one request at a time into moto, so every conditional
# write is atomic, as in DynamoDB.
#
# Connections still get a thread each. Served one connection at a time
# (werkzeug's single-threaded mode, which this launcher used before), the
# others wait in the listen queue, and about once per thousand requests
# Terraform's client lost a connection to a reset and retried the request;
# once moto had already acted on it, and the retried create failed ("Stage
# already exists", an apply of CI's). Measured over whole applies under load, with
# `nstat` (TcpExtTCPAbortOnData) and Terraform's debug log (`attempt=2`):
# 2 such resets in 4 applies before, none in 5 applies with a thread per
# connection.
#
# usage: python3 serve_moto.py HOST PORT [--exit-with-stdin]
# With --exit-with-stdin the server exits when its stdin closes, so a test
# binary that started it takes it along however it exits.
import logging
import os
import sys
import threading

# An ACM certificate validated by DNS is issued at once (moto makes it
# wait a minute, as if for the records; the local stack's Route 53 is moto
# too, so there is nothing to wait for). Read when moto is imported.
os.environ.setdefault("MOTO_ACM_VALIDATION_WAIT", "0")

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

host, port = sys.argv[1], int(sys.argv[2])
if "--exit-with-stdin" in sys.argv[3:]:
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()

# What moto leaves out and AWS does, supplied here.
#
# PublishVersion with a CodeSha256 publishes only if $LATEST holds that code
# (moto ignores the parameter); `cargo xtask publish` relies on it to never
# snapshot code other than the verified.
from urllib.parse import unquote

from moto.awslambda.exceptions import InvalidParameterValueException
from moto.awslambda.responses import LambdaResponse

_publish_version = LambdaResponse.publish_version


def publish_version(self):
    expected = self._get_param("CodeSha256")
    if expected:
        latest = self.backend.get_function(unquote(self.path.split("/")[-2]))
        if latest.code_sha_256 != expected:
            raise InvalidParameterValueException(
                f"CodeSHA256 ({expected}) is different from current CodeSHA256 in $LATEST "
                f"({latest.code_sha_256}). Please try again with the CodeSHA256 in $LATEST."
            )
    return _publish_version(self)


LambdaResponse.publish_version = publish_version

# UpdateMethod, which moto lacks (its 500 makes Terraform retry for ever):
# the patch operations of the settings the local gateway reads (whether a
# method needs an API key, its authorization type); any other is refused,
# never ignored.
import json

from moto.apigateway.exceptions import BadRequestException
from moto.apigateway.responses import APIGatewayResponse


def update_method(self):
    parts = self.path.split("/")
    method = self.backend.get_method(parts[2], parts[4], parts[6])
    for operation in self._get_param("patchOperations") or []:
        path, value = operation.get("path"), operation.get("value")
        if operation.get("op") != "replace":
            raise BadRequestException(f"the local emulator cannot {operation.get('op')} {path}")
        if path == "/apiKeyRequired":
            method.api_key_required = str(value).lower() == "true"
        elif path == "/authorizationType":
            method.authorization_type = value
        else:
            raise BadRequestException(f"the local emulator cannot update a method's {path}")
    return 200, {"status": 200}, json.dumps(method.to_json())


APIGatewayResponse.update_method = update_method

# With IAM enforced (moto's INITIAL_NO_AUTH_ACTION_COUNT) and
# $XTASK_MOTO_ACTION_LOG naming a file, every action moto judges is
# appended to it (`service:Action resource allowed|denied`), so a run of the
# release flow lists what the deployer's policy must allow.
#
# Under enforcement moto also checks each request's signature, and for REST
# requests without a body (Lambda's and API Gateway's GETs) its own
# computation disagrees with every SDK's (botocore's too): it refuses them
# all with SignatureDoesNotMatch. Here it judges who asks (the access key)
# and what they may do (the policies), not the signature.
from moto.iam.access_control import IAMRequestBase

IAMRequestBase.check_signature = lambda self: None

# Session credentials (AssumeRole's) expire, as AWS's do: moto keeps each
# one's expiration and never checks it. An expired one is refused with
# AWS's ExpiredToken, so a rehearsal sees what a stale CI token does.
from moto.core.exceptions import InvalidClientTokenIdError
from moto.core.utils import utcnow
from moto.iam import access_control
from moto.s3.exceptions import S3ClientError
from moto.sts.models import sts_backends

_assumed_init = access_control.AssumedRoleAccessKey.__init__


def assumed_init(self, account_id, partition, access_key_id, headers):
    _assumed_init(self, account_id, partition, access_key_id, headers)
    for role in sts_backends[account_id][partition].assumed_roles:
        if role.access_key_id == access_key_id and role.expiration < utcnow():
            raise access_control.CreateAccessKeyFailure(reason="ExpiredToken")


access_control.AssumedRoleAccessKey.__init__ = assumed_init


class ExpiredTokenError(InvalidClientTokenIdError):
    # AWS's query-protocol shape (one Error, as STS and IAM answer; moto's
    # own wraps it in Errors, which the Go SDK of Terraform cannot read);
    # the JSON protocols read the X-Amzn-ErrorType header.
    def __init__(self):
        super(InvalidClientTokenIdError, self).__init__(
            "ExpiredToken", "The security token included in the request is expired"
        )
        from xmltodict import unparse

        error = {"Type": "Sender", "Code": self.error_type, "Message": self.message}
        self.description = unparse(
            {"ErrorResponse": {"Error": error, "RequestId": "expired-token"}}, full_document=True
        )


def refusing_expired(raise_invalid, expired):
    def raise_invalid_access_key(self, reason):
        if reason == "ExpiredToken":
            raise expired()
        return raise_invalid(self, reason)

    return raise_invalid_access_key


access_control.IAMRequest._raise_invalid_access_key = refusing_expired(
    access_control.IAMRequest._raise_invalid_access_key, ExpiredTokenError
)
access_control.S3IAMRequest._raise_invalid_access_key = refusing_expired(
    access_control.S3IAMRequest._raise_invalid_access_key,
    lambda: S3ClientError("ExpiredToken", "The provided token has expired."),
)

_action_log = os.environ.get("XTASK_MOTO_ACTION_LOG")
if _action_log:
    _check_action_permitted = IAMRequestBase.check_action_permitted

    def check_action_permitted(self, resource):
        try:
            _check_action_permitted(self, resource)
            verdict = "allowed"
        except Exception:
            verdict = "denied"
            raise
        finally:
            with open(_action_log, "a") as log:
                log.write(f"{self._action} {resource} {verdict}\n")

    IAMRequestBase.check_action_permitted = check_action_permitted

logging.getLogger("werkzeug").setLevel(logging.WARNING)
_moto = DomainDispatcherApplication(create_backend_app)
_one_at_a_time = threading.Lock()


def one_at_a_time(environ, start_response):
    # The whole response is made under the lock (moto's are in memory).
    with _one_at_a_time:
        return list(_moto(environ, start_response))


run_simple(host, port, one_at_a_time, threaded=True)
