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
# AWS's managed policies exist, as on AWS: terraform/logs.tf attaches
# AmazonAPIGatewayPushToCloudWatchLogs to API Gateway's logging role, which
# moto refuses (NoSuchEntity) unless it loads them (about 0.6 s, once).
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

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

# Percentile statistics (`p99`, `p99.9`), which CloudWatch computes from the
# values put and moto answers with nothing: the alarms on p99 durations and
# latencies, which the local stack evaluates from GetMetricData, need them.
# Nearest rank over the period's values (a statistic set has no values: it
# cannot give a percentile on AWS either).
import math
import re

from moto.cloudwatch.models import Statistics

_statistic = Statistics.get_statistics_for_type
_percentile = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")


def get_statistics_for_type(self, stat):
    match = _percentile.match(stat or "")
    if not match:
        return _statistic(self, stat)
    weighted = [(value, 1.0) for value in self.metric_single_values_list]
    for datum in self.metric_aggregated_list:
        weighted += getattr(datum, "values_counts", [])
    weighted = sorted((value, count) for value, count in weighted if count > 0)
    total = sum(count for _, count in weighted)
    if not total:
        return None
    rank = max(math.ceil(float(match.group(1)) / 100 * total), 1)
    seen = 0.0
    for value, count in weighted:
        seen += count
        if seen >= rank:
            return value
    return weighted[-1][0]


Statistics.get_statistics_for_type = get_statistics_for_type

# GetMetricData matches a query's dimensions to a datum's by sorting both,
# and moto's Dimension orders by comparing a value with the other's name:
# the same dimensions in another order (Terraform sends an alarm's as its
# map orders them) never matched. Ordered by name, then value.
from moto.cloudwatch.models import Dimension

Dimension.__lt__ = lambda self, other: (self.name, self.value or "") < (other.name, other.value or "")

# ListMetrics lists each metric (namespace, name, dimensions) once, as AWS
# does; moto's comparison of two metrics' dimensions fails for any metric
# with more than one, so it listed every datum put (a page of duplicates).
import moto.cloudwatch.models as _cloudwatch_models


def are_dimensions_same(these, those):
    pairs = lambda dimensions: sorted((d.name, d.value) for d in dimensions)
    return pairs(these) == pairs(those)


_cloudwatch_models.are_dimensions_same = are_dimensions_same

# PutMetricData's values and counts kept as one datum each, and data older
# than three hours dropped: moto makes an object of every counted value and
# keeps them for ever, so a long `cargo xtask dev` grew without bound, and
# GetMetricData, which scans them all behind the one lock, slowed with it.
# (The alarms and a canary's bake look back minutes to hours.)
from datetime import datetime, timedelta, timezone

from moto.cloudwatch.models import CloudWatchBackend, MetricAggregatedDatum

_put_metric_data = CloudWatchBackend.put_metric_data
_kept_for = timedelta(hours=3)
_pruned_at = [datetime.now(timezone.utc)]


def _aware(at):
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def put_metric_data(self, namespace, metric_data):
    plain = []
    for number, member in enumerate(metric_data, start=1):
        if not member.get("Values"):
            plain.append(member)
            continue
        self._validate_parameters_put_metric_data(member, number)
        values = [float(value) for value in member["Values"]]
        counts = [float(count) for count in (member.get("Counts") or ["1"] * len(values))]
        counted = [value for value, count in zip(values, counts) if count > 0] or values
        datum = MetricAggregatedDatum(
            namespace=namespace,
            name=member["MetricName"],
            min_stat=min(counted),
            max_stat=max(counted),
            sample_count=sum(counts),
            sum_stat=sum(value * count for value, count in zip(values, counts)),
            dimensions=member.get("Dimensions", []),
            timestamp=member.get("Timestamp"),
            unit=member.get("Unit"),
        )
        datum.values_counts = list(zip(values, counts))
        self.metric_data.append(datum)
    if plain:
        _put_metric_data(self, namespace, plain)
    now = datetime.now(timezone.utc)
    if now - _pruned_at[0] > timedelta(minutes=1):
        _pruned_at[0] = now
        self.metric_data = [d for d in self.metric_data if _aware(d.timestamp) > now - _kept_for]


CloudWatchBackend.put_metric_data = put_metric_data

# CloudWatch Logs' filter patterns, as FilterLogEvents reads them (moto
# knows terms and one phrase, and answers every event for anything else):
# terms, all of which must appear ("quoted" phrases among them), `-term`
# (must not), `?term` (any of these), and JSON selectors `{ $.a.b = "x" }`
# with = != (strings, `*` a wildcard) and < <= > >= (numbers), joined by &&
# or || (no parentheses). What is left (space-delimited `[a, b]` and
# `%regex%` patterns) is refused, never answered with every event or none.
# `cargo xtask logs --filter`.
import moto.logs.models as _logs_models
from moto.logs.exceptions import InvalidParameterException


def _split_outside_quotes(text, separator):
    parts, current, quoted, at = [], "", False, 0
    while at < len(text):
        if text[at] == '"':
            quoted = not quoted
        if not quoted and text.startswith(separator, at):
            parts.append(current)
            current, at = "", at + len(separator)
            continue
        current += text[at]
        at += 1
    return parts + [current]


class FilterPattern:
    def __init__(self, pattern):
        self.pattern = (pattern or "").strip()
        if self.pattern.startswith("{"):
            if not self.pattern.endswith("}"):
                raise InvalidParameterException("Invalid filter pattern: an unclosed {")
            self.json = [
                [self._selector(term) for term in _split_outside_quotes(conjunction, "&&")]
                for conjunction in _split_outside_quotes(self.pattern[1:-1], "||")
            ]
        elif self.pattern.startswith("[") or self.pattern.startswith("%"):
            raise InvalidParameterException(
                "the local emulator supports term and JSON filter patterns, not this one: "
                + self.pattern
            )
        else:
            self.json = None
            self.terms = re.findall(r'[-?]?"[^"]*"|\S+', self.pattern)

    @staticmethod
    def _selector(text):
        found = re.match(r'\s*\$((?:\.[A-Za-z0-9_]+)+)\s*(=|!=|<=|>=|<|>)\s*("[^"]*"|[^\s()]+)\s*$', text)
        if not found:
            raise InvalidParameterException("Invalid filter pattern (no parentheses here): " + text)
        path, op, value = found.groups()
        return path.split(".")[1:], op, value

    @staticmethod
    def _compare(event, selector):
        path, op, wanted = selector
        value = event
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return False
            value = value[key]
        if op in ("<", "<=", ">", ">=") or (isinstance(value, (int, float)) and not wanted.startswith('"')):
            try:
                left, right = float(value), float(wanted)
            except (TypeError, ValueError):
                return False
            return {"=": left == right, "!=": left != right, "<": left < right,
                    "<=": left <= right, ">": left > right, ">=": left >= right}[op]
        text = str(value).lower() if isinstance(value, bool) else str(value)
        pattern = "^" + ".*".join(re.escape(part) for part in wanted.strip('"').split("*")) + "$"
        equal = re.match(pattern, text, re.DOTALL) is not None
        return equal if op == "=" else not equal

    def matches(self, message):
        if not self.pattern:
            return True
        if self.json is not None:
            try:
                event = json.loads(message)
            except ValueError:
                return False
            return any(all(self._compare(event, s) for s in conjunction) for conjunction in self.json)
        required, excluded, optional = [], [], []
        for term in self.terms:
            kind = {"-": excluded, "?": optional}.get(term[0], required)
            word = term[1:] if kind is not required else term
            kind.append(word.strip('"'))
        return (
            all(word in message for word in required)
            and not any(word in message for word in excluded)
            and (not optional or any(word in message for word in optional))
        )


_logs_models.EventMessageFilter = FilterPattern

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
