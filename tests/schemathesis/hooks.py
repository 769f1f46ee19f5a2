"""Schemathesis hooks for the Matrix API (loaded through SCHEMATHESIS_HOOKS by run.py).

matrix_response_schema_conformance is Schemathesis's response_schema_conformance with one
exception the Matrix spec itself makes: every endpoint that needs an access token answers a
request without one (or with one the server does not know) with 401 and M_MISSING_TOKEN or
M_UNKNOWN_TOKEN, as the spec's section on access tokens says. The definition files of the
user-interactive-auth endpoints (deleting devices, ...) document 401 only as the UIA response,
so the generic token error is checked against the spec's error shape instead.
"""

import schemathesis
from schemathesis.specs.openapi.checks import response_schema_conformance

TOKEN_ERRORS = {"M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"}


@schemathesis.check
def matrix_response_schema_conformance(ctx, response, case):
    """The answer matches the spec's schema for its status (token errors: the error shape)."""
    if response.status_code == 401:
        try:
            body = response.json()
        except Exception:
            body = None
        if isinstance(body, dict) and body.get("errcode") in TOKEN_ERRORS:
            if not isinstance(body.get("error", ""), str):
                raise AssertionError(f"401 {body['errcode']} with a non-string error: {body!r}")
            return None
    return response_schema_conformance(ctx, response, case)


# Long-polls (`/sync`, `/events`) may wait as long as a client asks; generated timeouts are
# capped so every request answers well within the run's request timeout.
MAX_TIMEOUT_MS = 1000


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict) and "timeout" in query:
        try:
            if int(query["timeout"]) > MAX_TIMEOUT_MS:
                query["timeout"] = MAX_TIMEOUT_MS
        except (TypeError, ValueError):
            pass
    return query
