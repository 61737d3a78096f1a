"""The OpenAPI 3.0 document of the REST API, served at ``/openapi.json``.

Written by hand from the V2 protocol's REST definition (and Triton's
repository extension), so that it says what turnout answers, errors and
credentials included; the tests validate it and run schemathesis against a
live server from it.
"""

from __future__ import annotations

from typing import Any

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str | None = "Error") -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {_JSON: {"schema": _ref(schema)}}
    return answer


_ERRORS = {
    "400": _answer("the request is malformed or does not fit the model's signature"),
    "401": _answer("no credential, or one that is not valid"),
    "403": _answer("the credential lacks the role or the model"),
    "404": _answer("unknown model or version"),
    "413": _answer("over a size limit (body, tensor elements, BYTES element)"),
    "429": _answer("the credential's rate limit is spent (see Retry-After)"),
    "503": _answer("not ready, queue full or queue timeout (see Retry-After)"),
}

_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Feedback": {
        "type": "object",
        "required": ["id", "outcome"],
        "properties": {"id": {"type": "string"}, "outcome": {"oneOf": [{"type": "number"}, {"type": "boolean"}]}},
    },
    "FeedbackRecorded": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "variant": {"type": "string"}, "recorded": {"type": "boolean"}},
    },
    "RoutingPolicy": {
        "type": "object",
        "required": ["policy"],
        "properties": {"policy": {"type": "string", "enum": ["single", "canary", "blue_green", "shadow", "ab"]}},
        "additionalProperties": True,
    },
    "RoutingStatus": {"type": "object", "additionalProperties": True},
    "Parameters": {"type": "object", "additionalProperties": True},
    "Datatype": {
        "type": "string",
        "enum": [
            "BOOL",
            "UINT8",
            "UINT16",
            "UINT32",
            "UINT64",
            "INT8",
            "INT16",
            "INT32",
            "INT64",
            "FP16",
            "FP32",
            "FP64",
            "BYTES",
        ],
    },
    "Shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "RequestInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": _ref("Shape"),
            "datatype": _ref("Datatype"),
            "parameters": _ref("Parameters"),
            "data": {"description": "row-major values, flat or nested; absent with binary_data_size"},
        },
    },
    "RequestOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _ref("Parameters")},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "inputs": {"type": "array", "items": _ref("RequestInput"), "minItems": 1},
            "outputs": {"type": "array", "items": _ref("RequestOutput")},
        },
    },
    "ResponseOutput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": _ref("Shape"),
            "datatype": _ref("Datatype"),
            "parameters": _ref("Parameters"),
            "data": {"type": "array", "items": {}},
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "outputs": {"type": "array", "items": _ref("ResponseOutput")},
        },
    },
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": _ref("Datatype"),
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
    "ModelReady": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "IndexRequest": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "IndexEntry": {
        "type": "object",
        "required": ["name", "version", "state", "reason"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"type": "string", "enum": ["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]},
            "reason": {"type": "string"},
        },
    },
    "LoadRequest": {"type": "object", "properties": {"parameters": _ref("Parameters")}},
}


def _operation(
    summary: str,
    ok: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_ERRORS}}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {_JSON: {"schema": _ref(body)}}}
    operation["security"] = _SECURED if secured else []
    return operation


def document(server_version: str, inference: bool, admin: bool) -> dict[str, Any]:
    """The OpenAPI document of the REST API as one listener serves it: the
    inference plane's routes, the admin plane's, or both."""
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _operation("liveness", _answer("live", "Live"), secured=False)},
        "/v2/health/ready": {"get": _operation("readiness", _answer("ready", "Ready"), secured=False)},
        "/v2": {"get": _operation("server metadata", _answer("metadata", "ServerMetadata"), secured=False)},
        "/v2/repository/index": {
            "post": _operation("models and versions with their state", _index(), body="IndexRequest")
        },
    }
    model_routes = [
        ("/v2/models/{model}", [_MODEL]),
        ("/v2/models/{model}/versions/{version}", [_MODEL, _VERSION]),
    ]
    for prefix, parameters in model_routes if inference else []:
        paths[prefix] = {"get": _operation("model metadata", _answer("metadata", "ModelMetadata"), parameters)}
        paths[prefix + "/ready"] = {"get": _operation("model readiness", _answer("ready", "ModelReady"), parameters)}
        paths[prefix + "/config"] = {
            "get": _operation("the configuration, shaped as Triton's", _answer("configuration", None), parameters)
        }
        paths[prefix + "/infer"] = {
            "post": _operation(
                "inference (JSON, or Triton's binary extension with Inference-Header-Content-Length)",
                _answer("the outputs", "InferenceResponse"),
                parameters,
                body="InferenceRequest",
            )
        }
    if inference:
        paths["/v2/models/{model}/feedback"] = {
            "post": _operation(
                "an A/B test's outcome for an answered request (404: no assignment for the id; 409: already given)",
                _answer("recorded", "FeedbackRecorded"),
                [_MODEL],
                body="Feedback",
            )
        }
        paths["/metrics"] = {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}, **_ERRORS},
                "security": _SECURED,
            }
        }
    for action in ("load", "unload"):
        paths[f"/v2/repository/models/{{model}}/{action}"] = {
            "post": _operation(
                f"{action} a model ({'admin plane' if admin else 'served on the admin plane: 403 here'})",
                _answer("done", None),
                [_MODEL],
                body="LoadRequest" if action == "load" else None,
            )
        }
    if admin:
        paths.update(_routing_paths())
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "turnout: KServe Open Inference Protocol (V2) REST API",
            "version": server_version,
            "description": "See the README for credentials, roles and planes.",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a turnout API key or a JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _routing_paths() -> dict[str, Any]:
    """Traffic control on the admin plane (README, Traffic control)."""
    status = _answer("the endpoint's routing now", "RoutingStatus")
    base = "/v2/routing/{model}"
    operation = {"name": "operation", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": ["start", "pause", "resume", "promote", "rollback"]}}  # fmt: skip
    listing = {"description": "a list", "content": {_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}}}
    return {
        "/v2/routing": {"get": _operation("every endpoint's routing", listing)},
        base: {
            "get": _operation("the endpoint's policy, rollout, windows and shadow statistics", status, [_MODEL]),
            "put": _operation("set the endpoint's policy", status, [_MODEL], body="RoutingPolicy"),
            "delete": _operation("remove the endpoint's policy", status, [_MODEL]),
        },
        base + "/switch": {"post": _operation("blue/green switch", status, [_MODEL], body="Parameters")},
        base + "/rollout/{operation}": {
            "post": _operation("start or steer a canary rollout", status, [_MODEL, operation], body="Parameters")
        },
        base + "/events": {"get": _operation("the endpoint's event log", listing, [_MODEL])},
        base + "/shadow": {"get": _operation("shadow comparison statistics", listing, [_MODEL])},
        base + "/ab": {"post": _operation("the A/B report", _answer("the report", None), [_MODEL], body="Parameters")},
    }


def _index() -> dict[str, Any]:
    return {
        "description": "the index",
        "content": {_JSON: {"schema": {"type": "array", "items": _ref("IndexEntry")}}},
    }
