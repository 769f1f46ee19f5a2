"""Schemathesis over the Matrix Client-Server API's OpenAPI definitions, against a live haetae.

    run.py BASE_URL

For each definition file in spec/data/api/client-server/ (vendored from matrix-spec, see
spec/README.md) it registers a fresh user, so an operation that logs out or deactivates cannot
spoil the others, and runs Schemathesis with that user's token. Two checks must hold for every
generated request, valid or not:

- not_a_server_error: no 5xx, whatever the input;
- response_schema_conformance: every answer whose status the spec documents matches its schema
  (as `matrix_response_schema_conformance` in hooks.py: the spec's generic 401 token errors are
  held to the error shape even where a file documents 401 only as user-interactive auth).

Each operation gets at most MAX_EXAMPLES generated cases per phase (examples, coverage, fuzzing)
with a fixed seed, so a run is repeatable and takes a few minutes on two cores. Operations haetae
does not implement on purpose are listed in EXCLUDED with the reason.
"""

import concurrent.futures
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(HERE, "spec", "data", "api", "client-server")
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")

MAX_EXAMPLES = int(os.environ.get("HAETAE_SCHEMATHESIS_EXAMPLES", "6"))
SEED = os.environ.get("HAETAE_SCHEMATHESIS_SEED", "20261129")
# Per definition file: a bound on the whole file's run (the operations in it together).
FILE_TIMEOUT_S = 120
# Above the spec's own example long-poll (`/events?timeout=35000`), which Schemathesis sends
# as is in its examples phase; generated timeouts are capped by hooks.py.
REQUEST_TIMEOUT_S = 45
# Definition files run at once, each in its own Schemathesis process.
PARALLEL_FILES = 2

# operationId -> why haetae does not implement it (so Schemathesis does not exercise it).
EXCLUDED = {
    # Third-party identifiers: haetae has no identity server integration and no email/SMS.
    "getAccount3PIDs": "no third-party identifiers (no identity server)",
    "post3PIDs": "no third-party identifiers (no identity server)",
    "add3PID": "no third-party identifiers (no identity server)",
    "bind3PID": "no third-party identifiers (no identity server)",
    "delete3pidFromAccount": "no third-party identifiers (no identity server)",
    "unbind3pidFromAccount": "no third-party identifiers (no identity server)",
    "requestTokenTo3PIDEmail": "no email or SMS delivery",
    "requestTokenTo3PIDMSISDN": "no email or SMS delivery",
    "requestTokenToResetPasswordEmail": "no email or SMS delivery",
    "requestTokenToResetPasswordMSISDN": "no email or SMS delivery",
    "requestTokenToRegisterEmail": "no email or SMS delivery",
    "requestTokenToRegisterMSISDN": "no email or SMS delivery",
    "inviteBy3PID": "no third-party invites (no identity server)",
    # Application services: haetae has no application service registrations.
    "pingAppservice": "no application services",
    "updateAppserviceRoomDirectoryVisibility": "no application services",
    # Single sign-on through an external identity provider: login is by password or haetae's own
    # OAuth 2.0 provider.
    "redirectToSSO": "no external single sign-on provider",
    "redirectToIdP": "no external single sign-on provider",
    # Administration beyond Synapse's admin API shapes haetae offers.
    "getWhoIs": "no per-session connection records",
    "getAdminSuspendUser": "account suspension not implemented",
    "setAdminSuspendUser": "account suspension not implemented",
    "getAdminLockUser": "account locking not implemented",
    "setAdminLockUser": "account locking not implemented",
    # Peeking into rooms the user has not joined (deprecated with /events' stream form).
    "peekEvents": "no peeking into rooms the user has not joined",
    # Policy servers are for federation, which haetae does not speak.
    "getWellknownPolicy": "no federation, so no policy server",
    # No TURN server: haetae answers {} (as Synapse does without one), which the spec's schema
    # for 200 does not describe; calls go peer to peer or through the client's own TURN.
    "getTurnServer": "no TURN server",
    # URL previews are off by default (the node would fetch from other sites on users' behalf):
    # both answer 404 M_UNRECOGNIZED, which the spec does not list.
    "getUrlPreview": "off by default",
    "getUrlPreviewAuthed": "off by default",
}

# Definition files none of whose operations haetae serves on purpose.
EXCLUDED_FILES = {
    "administrative_contact.yaml": "third-party identifiers",
    "appservice_ping.yaml": "application services",
    "appservice_room_directory.yaml": "application services",
    "sso_login_redirect.yaml": "external single sign-on",
    "peeking_events.yaml": "peeking",
    "policy_server.yaml": "federation",
}


def request(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def register(base):
    """A fresh user and its access token; waits out registration rate limits (bounded)."""
    deadline = time.monotonic() + 60
    username = "schemathesis_" + secrets.token_hex(6)
    while True:
        status, body = request(base, "POST", "/_matrix/client/v3/register", {
            "username": username, "password": secrets.token_urlsafe(18), "auth": {"type": "m.login.dummy"},
        })
        if status == 200:
            return body["access_token"]
        if status == 429 and time.monotonic() < deadline:
            time.sleep(min(body.get("retry_after_ms", 1000), 5000) / 1000)
            continue
        raise SystemExit(f"registration failed: {status} {body}")


def run_file(base, name):
    """Runs Schemathesis over one definition file as a fresh user; (name, ok, output, seconds)."""
    token = register(base)
    command = [
        SCHEMATHESIS, "run", os.path.join(SPEC, name),
        "--origin", base,
        "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error,matrix_response_schema_conformance",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", SEED,
        "--no-shrink",
        # One worker per process: Hypothesis's lambda-description cache is not thread-safe (it
        # raised "AST constructor recursion depth mismatch" with two); files run in parallel.
        "--workers", "1",
        "--request-timeout", str(REQUEST_TIMEOUT_S),
        "--suppress-health-check", "all",
        "--warnings", "off",
    ]
    for operation in EXCLUDED:
        command += ["--exclude-operation-id", operation]
    started = time.monotonic()
    env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", PYTHONPATH=HERE)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=FILE_TIMEOUT_S, env=env, cwd=HERE)
        output, code = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as err:
        output, code = f"{err.stdout or ''}{err.stderr or ''}\ntimed out after {FILE_TIMEOUT_S} s", -1
    # A file all of whose operations are excluded has nothing to run: not a failure.
    ok = code == 0 or "No API operations found" in output or "No operations" in output
    return name, ok, output, time.monotonic() - started


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: run.py BASE_URL")
    base = sys.argv[1].rstrip("/")
    files = sorted(f for f in os.listdir(SPEC) if f.endswith(".yaml") and f not in EXCLUDED_FILES)
    failed = []
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL_FILES) as pool:
        for name, ok, output, took in pool.map(lambda name: run_file(base, name), files):
            if ok:
                print(f"ok   {name} ({took:.1f} s)", flush=True)
            else:
                failed.append(name)
                print(f"FAIL {name} ({took:.1f} s)\n{output}", flush=True)
    print(f"{len(files) - len(failed)} passed, {len(failed)} failed ({time.monotonic() - started:.0f} s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
