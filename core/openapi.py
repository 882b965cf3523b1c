"""The REST API's documented contract, shared by every app's router: the error envelope as schemas
(`ErrorOut`, `PolicyViolationOut`), what each refusal status means, and `documented()`, which
gives an operation its success schema, every error status it can answer (each with a schema and
an example) and an example request and response.

Every operation can answer 400 (a malformed parameter, or text no database can store) and 401
(no or bad credentials); every operation with a body can answer 413 (oversize body, refused by
core.middleware before anything parses it). The rest are named per operation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from ninja import Field, Schema
from pydantic import ConfigDict


class ErrorOut(Schema):
    """{"error": code, "detail": sentence}; a few refusals add a field (e.g. `field` for a bad filter)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "examples": [{"error": "not_found", "detail": "No service named 'HMS-XYZ'."}]})

    error: str = Field(..., description="machine-readable code, e.g. invalid_request, unauthorized, not_found")
    detail: str = Field(..., description="one sentence for a human")


class PolicyViolationOut(Schema):
    """A refusal by a policy (edited in admin): which policy, which kind, and the numbers."""

    error: Literal["policy_violation"]
    detail: str = Field(..., description="the first refusal's sentence")
    policy: str | None = Field(..., description="name of the policy that decided the status")
    kind: str | None = Field(..., description="its kind: change_freeze, concurrent_runs, instance_bounds, scaling_rate")
    limit: int | None = Field(..., description="the policy's limit, when it has one")
    current: int | None = Field(..., description="the count the limit was checked against")
    reasons: list[str] = Field(..., description="every refusal's sentence, in the order checked")
    policies: list[str] = Field(..., description="every refusing policy's name")


class DecisionOut(Schema):
    """The answer of a dry run (`?dry_run=1`): what enforce() decided; nothing changed."""

    dryRun: Literal[True] = True
    allowed: bool
    policy: str | None
    kind: str | None
    detail: str
    limit: int | None
    current: int | None
    reasons: list[str]
    checked: list[str] = Field(..., description="the policies that applied")
    policies: list[str] = Field(..., description="the refusing policies")


def _policy_example(detail: str, policy: str, kind: str, limit: int | None, current: int | None) -> dict[str, Any]:
    return {"error": "policy_violation", "detail": detail, "policy": policy, "kind": kind, "limit": limit,
            "current": current, "reasons": [detail], "policies": [policy]}


QUOTA_EXAMPLE = _policy_example("5 of 5 analytics runs already active for carol.", "analytics jobs per user ≤ 5",
                                "concurrent_runs", 5, 5)
BOUNDS_EXAMPLE = _policy_example("HMS-SVC may run at most 4 instances; 9 requested.", "HMS-SVC at most 4",
                                 "instance_bounds", 4, 9)
FREEZE_EXAMPLE = _policy_example("Change freeze 'release' is in force until 2026-05-01 18:00 UTC.", "release",
                                 "change_freeze", None, None)

# What each refusal means, as the docs show it, and an example answer.
ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("Malformed JSON, wrong or missing fields, an out-of-range value, or text no database can store "
          "(NUL, a lone surrogate).",
          {"error": "invalid_request", "detail": "instances: Input should be less than or equal to 50"}),
    401: ("No or bad credentials: send `Authorization: Bearer <token>` or sign in.",
          {"error": "unauthorized", "detail": "Authentication required: send 'Authorization: Bearer <token>' "
                                              "or sign in."}),
    403: ("You may see it but not do this (or a session write without its CSRF token).",
          {"error": "forbidden", "detail": "You may not do that."}),
    404: ("Unknown, or not visible to you.", {"error": "not_found", "detail": "Not found."}),
    409: ("Refused in the object's current state, or by a policy (a change freeze, a scaling cooldown).",
          {"error": "not_active", "detail": "Run 42 has already finished (succeeded)."}),
    413: ("The request body is larger than HMS_MAX_BODY_BYTES.",
          {"error": "payload_too_large", "detail": "Request body is 200000 bytes; the limit is 65536 bytes."}),
    422: ("Refused by a policy: instance bounds, or a scaling step larger than allowed.", BOUNDS_EXAMPLE),
    429: ("Refused by a quota policy (concurrent runs).", QUOTA_EXAMPLE),
    503: ("The engine is unreachable; the desired count is recorded and applied when it is back.",
          {"error": "engine_unavailable",
           "detail": "The docker engine is unreachable (connection refused). The desired count 3 is recorded "
                     "and will be applied when it is back."}),
}
# The statuses a policy refusal takes (policies.enforce): a change freeze 409 on either action; a
# scale also a cooldown 409 or instance bounds / step 422; a run (start, retry) a quota 429.
POLICY_STATUSES = frozenset({409, 422, 429})
SCALE_POLICIES = (409, 422)
RUN_POLICIES = (409, 429)
ALWAYS = (400, 401)


def documented(
    ok: Any,
    *,
    errors: Iterable[int] = (),
    policy: Iterable[int] = (),
    body: bool = False,
    request_example: Any = None,
    response_example: Any = None,
    error_examples: dict[int, dict[str, Any]] | None = None,
    openapi_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`response=` and `openapi_extra=` for a router decorator: 200 → ok, and each error status
    (400 and 401 always, 413 with a body, `errors` besides) → ErrorOut; the `policy` statuses (a
    policy refusal: SCALE_POLICIES or RUN_POLICIES) → PolicyViolationOut, or either when the status
    is also in `errors` (a 409: a state conflict, or a change freeze)."""
    conflicts, policy = set(errors), set(policy)
    assert policy <= POLICY_STATUSES, policy
    statuses = set(ALWAYS) | conflicts | ({413} if body else set()) | policy
    response: dict[int, Any] = {200: ok}
    docs: dict[int, Any] = {}
    for status in sorted(statuses):
        description, example = ERRORS[status]
        schema: Any = ErrorOut
        if status in policy:
            if status in conflicts:
                schema = ErrorOut | PolicyViolationOut
            else:
                schema = PolicyViolationOut
                example = FREEZE_EXAMPLE if status == 409 else example
        response[status] = schema
        example = (error_examples or {}).get(status, example)
        docs[status] = {"description": description, "content": {"application/json": {"example": example}}}
    extra: dict[str, Any] = {"responses": docs}
    if response_example is not None:
        docs[200] = {"content": {"application/json": {"example": response_example}}}
    if request_example is not None:
        extra["requestBody"] = {"content": {"application/json": {"example": request_example}}}
    for key, value in (openapi_extra or {}).items():
        if key == "responses":
            for status, more in value.items():
                docs.setdefault(status, {}).update(more)
        else:
            extra[key] = value
    return {"response": response, "openapi_extra": extra}


# What every database here can store (core.safejson; core.middleware for paths and query strings):
# text without NUL, anywhere in a body, a path or a query string. The request schemas say so, so a
# generated "valid" request is one the console accepts.
NO_NUL = "^[^\x00]*$"
STORABLE_TEXT: dict[str, Any] = {"type": "string", "pattern": NO_NUL}
STORABLE_JSON_REF = "#/components/schemas/StorableJSON"
STORABLE_JSON: dict[str, Any] = {
    "description": "Any JSON whose strings and keys hold no NUL character (\\u0000) and no unpaired surrogate.",
    "anyOf": [
        {"type": "null"}, {"type": "boolean"}, {"type": "number"}, STORABLE_TEXT,
        {"type": "array", "items": {"$ref": STORABLE_JSON_REF}},
        {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": {"$ref": STORABLE_JSON_REF}},
    ],
}
# In a model's JSON schema: "storable JSON here" (pydantic resolves every $ref itself, so the
# models carry this marker and link_storable_json() turns it into the $ref in the document).
STORABLE_JSON_MARK: dict[str, Any] = {"x-storable-json": True}
# For a body model's model_config: the keys it ignores are storable JSON too.
STORABLE_BODY: dict[str, Any] = {"propertyNames": {"pattern": NO_NUL}, "additionalProperties": STORABLE_JSON_MARK}


def link_storable_json(document: dict[str, Any]) -> dict[str, Any]:
    """The document with StorableJSON in its components and every marker a $ref to it (a copy
    where it changes: the marker dicts may be shared with the models' schema constants)."""

    def link(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("x-storable-json") is True:
                return {"$ref": STORABLE_JSON_REF}
            return {key: link(value) for key, value in node.items()}
        if isinstance(node, list):
            return [link(item) for item in node]
        return node

    linked = link(document)
    linked["components"]["schemas"]["StorableJSON"] = STORABLE_JSON
    return linked
