"""How ``@arguments`` reads a request: webargs, bent to kodo's error tree.

webargs would answer a bad body with its own 422 payload and treat a non-JSON body as
absent. kodo's contract is stricter and older than this parser: the body must be
``application/json`` (415), parse as JSON (400 ``malformed_json``) and be an object;
field errors are a 400 ``invalid_input`` listing each field. A schema whose body may be
omitted says so (``body_required = False``) and an empty body then reads as ``{}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

import flask
import marshmallow as ma
from webargs.flaskparser import FlaskParser

from shared.errors import InvalidInput

from .errors import MalformedJson, UnsupportedMediaType


class BodySchema(ma.Schema):
    """A request body: unknown fields are refused; the body itself may be optional.

    Keys are camelCase, as in every response. The snake_case names of this API's first
    release (``base_ref``, ``plan_sha256``, ...) are still accepted, for one release
    (``SNAKE_CASE_UNTIL``): each is read as its camelCase key, and a body naming both
    is refused rather than one silently winning.
    """

    body_required = True

    class Meta:
        unknown = ma.RAISE

    @ma.pre_load
    def _accept_snake_case(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        renamed = dict(data)
        for name, field in self.fields.items():
            camel = field.data_key
            if camel is None or camel == name or name not in renamed:
                continue
            if camel in renamed:
                raise ma.ValidationError(f"give {camel} or {name} (deprecated), not both", name)
            renamed[camel] = renamed.pop(name)
        return renamed


SNAKE_CASE_UNTIL = "0.2.0"
"""The release that stops accepting snake_case request keys."""


def body_required(schema: ma.Schema) -> bool:
    return not isinstance(schema, BodySchema) or schema.body_required


def _unnest(messages: Any) -> dict[str, Any]:
    """webargs files field errors under the location (``{"json": {...}}``): lift them out."""
    if isinstance(messages, Mapping) and len(messages) == 1:
        [(location, inner)] = messages.items()
        if location in FlaskParser.__location_map__:
            messages = inner
    return dict(messages) if isinstance(messages, Mapping) else {"_schema": messages}


class KodoParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req: flask.Request, schema: ma.Schema) -> Any:
        raw = req.get_data(cache=True)  # over MAX_CONTENT_LENGTH: Werkzeug raises 413
        if not raw and not body_required(schema):
            return {}
        if not req.is_json:
            raise UnsupportedMediaType(
                "send the body as application/json", details={"contentType": req.content_type}
            )
        if not raw:
            raise InvalidInput("a JSON body is required")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # bad UTF-8 is a ValueError too
            raise MalformedJson(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInput(
                "the body must be a JSON object", details={"_schema": ["must be an object"]}
            )
        return data

    def handle_error(
        self,
        error: ma.ValidationError,
        req: flask.Request,
        schema: ma.Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> NoReturn:
        raise InvalidInput("the request is invalid", details=_unnest(error.messages)) from error
