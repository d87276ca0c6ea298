"""Schemathesis hooks for .ci/schemathesis.

Schemathesis generates a negative (invalid) case and then checks that the server refuses it. For a
multipart form some invalid cases are valid on the wire: an array is sent as one part per item, so
an array of no item is the part left out and one of a single item is that item sent alone, and a
mutated schema may forbid a part by its own name (`file`) while the original allows it.
Schemathesis 4.32 means to re-check the form as sent, but gives up on a form that also carries a
binary file part, and then reports the server's acceptance as a failure no server could avoid.
This hook does that re-check first and drops the negative multipart cases that the document's own
schema accepts as sent.

`POST /upload-url` refuses a `sizeBytes` over `MAX_VIDEO_SIZE` (400), a setting of the server the
document cannot state as a number: positive cases over the limit the run's server has (the
`MAX_VIDEO_SIZE` that .ci/schemathesis gives both) are dropped. Every other case goes through
unchanged.
"""

import json
import os

import jsonschema_rs
import schemathesis
from schemathesis.transport.serialization import Binary


def _as_sent(value):
    """A part's value as the server reads it off the wire."""
    if isinstance(value, Binary):
        return ""  # any bytes are a valid binary string
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _over_size_limit(case):
    """A positive `POST /upload-url` case declaring more than the server's MAX_VIDEO_SIZE."""
    limit = int(os.environ.get("MAX_VIDEO_SIZE", "0"))
    size = case.body.get("sizeBytes") if isinstance(case.body, dict) else None
    return (
        case.operation.path == "/upload-url"
        and limit > 0
        and isinstance(size, (int, float))
        and not isinstance(size, bool)
        and size > limit
    )


@schemathesis.hook
def filter_case(context, case):
    meta = case.meta
    positive = meta is None or not meta.generation.mode.is_negative
    if positive and _over_size_limit(case):
        return False
    if (
        meta is None
        or not meta.generation.mode.is_negative
        or not (case.media_type or "").startswith("multipart/form-data")
        or not isinstance(case.body, dict)
    ):
        return True
    sent = {}
    for name, value in case.body.items():
        if isinstance(value, list):
            if not value:
                continue  # no part at all
            if len(value) == 1:
                value = value[0]  # one part, the same as the item alone
        sent[name] = _as_sent(value)
    schema = case.operation.get_body_for_media_type(case.media_type).optimized_schema
    return not jsonschema_rs.validator_for(schema).is_valid(sent)
