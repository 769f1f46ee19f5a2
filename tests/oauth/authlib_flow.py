"""The Matrix OAuth 2.0 API driven by Authlib, an OAuth client library nobody here wrote.

    python authlib_flow.py BASE_URL

Discovery, dynamic client registration (a native client with a loopback redirect URI, used with a
port as RFC 8252 allows), the authorization code grant with PKCE S256 (the login and consent pages
driven with plain HTTP form posts, as a browser without JavaScript would), a Matrix call with the
access token, refresh, refresh-token reuse detection, revocation, and the device authorization
grant. Then OpenID Connect as another service uses it: discovery at
/.well-known/openid-configuration, a web client signing a person in with `openid profile`, the
id_token verified against the JWKS (signature with joserfc, claims with Authlib's CodeIDToken:
iss, aud, sub, nonce, exp, iat, auth_time, at_hash), userinfo; refusals with their OAuth error
codes (unknown client, unregistered redirect URI, wrong PKCE verifier, reused code); and confidential
clients authenticating with client_secret_basic and client_secret_post. Exits
non-zero on the first failure; every request has a timeout.
"""

import html.parser
import os
import sys
import time
import urllib.parse
import uuid
import warnings

# Authlib refuses plain http unless told; the test server listens on loopback http.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

import requests  # noqa: E402
from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.integrations.base_client.errors import OAuthError  # noqa: E402
from joserfc import jwt as jose_jwt  # noqa: E402
from joserfc.jwk import KeySet  # noqa: E402

with warnings.catch_warnings():
    # CodeIDToken lives beside the deprecated authlib.jose; only its claim rules are used here.
    warnings.simplefilter("ignore")
    from authlib.oidc.core import CodeIDToken  # noqa: E402

TIMEOUT_S = 15
DEADLINE = time.monotonic() + 60
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    if time.monotonic() > DEADLINE:
        print("FAIL: took longer than 60 s", file=sys.stderr)
        sys.exit(1)


class Forms(html.parser.HTMLParser):
    """Collects each form's action and its named input values."""

    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append((attrs.get("action"), {}))
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1][1][attrs["name"]] = attrs.get("value") or ""


def form(page, action):
    parser = Forms()
    parser.feed(page)
    for form_action, fields in parser.forms:
        if form_action == action:
            return dict(fields)
    check(False, f"no form posting to {action} in the page")


def register_user(base):
    name = "authlib_" + uuid.uuid4().hex[:10]
    password = "a long enough password"
    body = {"username": name, "password": password}
    first = requests.post(f"{base}/_matrix/client/v3/register", json=body, timeout=TIMEOUT_S)
    check(first.status_code == 401, f"register step 1: {first.status_code}")
    body["auth"] = {"type": "m.login.dummy", "session": first.json()["session"]}
    done = requests.post(f"{base}/_matrix/client/v3/register", json=body, timeout=TIMEOUT_S)
    check(done.status_code == 200, f"register: {done.status_code} {done.text}")
    return name, password


def whoami(base, token):
    return requests.get(
        f"{base}/_matrix/client/v3/account/whoami",
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT_S,
    )


def main(base):
    base = base.rstrip("/")
    # Discovery, as a Matrix client does it.
    metadata = requests.get(f"{base}/_matrix/client/v1/auth_metadata", timeout=TIMEOUT_S).json()
    for field in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"):
        check(field in metadata, f"metadata lacks {field}")
    check("S256" in metadata["code_challenge_methods_supported"], "S256 not advertised")
    unstable = requests.get(f"{base}/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", timeout=TIMEOUT_S)
    check(unstable.json() == metadata, "the unstable metadata path differs")

    # Dynamic client registration (RFC 7591).
    registration = requests.post(
        metadata["registration_endpoint"],
        json={
            "client_name": "Authlib test",
            "client_uri": "https://authlib.example.org/",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "application_type": "native",
            "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
        timeout=TIMEOUT_S,
    )
    check(registration.status_code == 201, f"registration: {registration.status_code} {registration.text}")
    client_id = registration.json()["client_id"]
    print(f"registered client {client_id}")

    username, password = register_user(base)
    device_id = "AUTHLIB" + uuid.uuid4().hex[:6].upper()
    scope = f"urn:matrix:client:api:* urn:matrix:client:device:{device_id}"
    # Loopback redirect with a port the client picked now; the registration has none.
    redirect_uri = "http://127.0.0.1:53682/callback"
    oauth = OAuth2Session(
        client_id,
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
        timeout=TIMEOUT_S,
    )
    verifier = generate_token(64)
    url, state = oauth.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, response_mode="query"
    )

    # The person's browser: the login page, then consent; no redirect is followed.
    browser = requests.Session()
    page = browser.get(url, allow_redirects=False, timeout=TIMEOUT_S)
    check(page.status_code == 200 and "Sign in" in page.text, f"login page: {page.status_code}")
    fields = form(page.text, "/oauth2/login")
    fields.update(username=username, password=password)
    signed_in = browser.post(f"{base}/oauth2/login", data=fields, allow_redirects=False, timeout=TIMEOUT_S)
    check(signed_in.status_code == 303, f"sign in: {signed_in.status_code}")
    consent = browser.get(base + signed_in.headers["Location"], allow_redirects=False, timeout=TIMEOUT_S)
    check(consent.status_code == 200 and "Allow access?" in consent.text, "consent page")
    fields = form(consent.text, "/oauth2/authorize")
    fields["decision"] = "allow"
    answer = browser.post(f"{base}/oauth2/authorize", data=fields, allow_redirects=False, timeout=TIMEOUT_S)
    check(answer.status_code == 303, f"consent: {answer.status_code}")
    callback = answer.headers["Location"]
    check(callback.startswith(redirect_uri + "?"), "the callback goes to the loopback redirect URI")

    # Authlib checks `state` and sends the PKCE verifier.
    token = oauth.fetch_token(
        metadata["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier
    )
    check(token.get("token_type") == "Bearer" and token.get("refresh_token"), "token response")
    me = whoami(base, token["access_token"])
    check(me.status_code == 200 and me.json()["device_id"] == device_id, f"whoami: {me.text}")
    print("authorization code grant with PKCE: ok")

    first_refresh = token["refresh_token"]
    refreshed = oauth.refresh_token(metadata["token_endpoint"], refresh_token=first_refresh)
    check(refreshed["refresh_token"] != first_refresh, "the refresh token rotates")
    check(whoami(base, refreshed["access_token"]).status_code == 200, "the refreshed access token works")
    second = oauth.refresh_token(metadata["token_endpoint"], refresh_token=refreshed["refresh_token"])
    check(whoami(base, second["access_token"]).status_code == 200, "the second refresh works")
    print("refresh: ok")

    # A spent refresh token presented again is refused. Within the server's grace period (a late
    # copy of a request the client gave up on) the session goes on; after it, reuse revokes it.
    def replay():
        try:
            oauth.refresh_token(metadata["token_endpoint"], refresh_token=first_refresh)
        except Exception as error:  # Authlib raises its OAuthError with the server's error code
            check("invalid_grant" in str(error), f"reuse refused with invalid_grant, got {error}")
            return str(error)
        check(False, "a spent refresh token was accepted")

    deadline = time.monotonic() + 20
    while "revoked" not in replay():
        check(time.monotonic() < deadline, "reuse of a spent refresh token never revoked the session")
        check(whoami(base, second["access_token"]).status_code == 200, "a refused late copy left the session working")
        time.sleep(0.25)
    check(whoami(base, second["access_token"]).status_code == 401, "reuse revoked the session")
    print("refresh-token reuse detection: ok")

    # The device authorization grant, then revocation of what it gave.
    device_id2 = "AUTHLIBTV" + uuid.uuid4().hex[:4].upper()
    started = requests.post(
        metadata["device_authorization_endpoint"],
        data={"client_id": client_id, "scope": f"urn:matrix:client:api:* urn:matrix:client:device:{device_id2}"},
        timeout=TIMEOUT_S,
    ).json()
    approve = browser.get(started["verification_uri_complete"], allow_redirects=False, timeout=TIMEOUT_S)
    check(approve.status_code == 200 and "Allow this device?" in approve.text, "device confirmation page")
    fields = form(approve.text, "/device")
    fields["decision"] = "allow"
    approved = browser.post(f"{base}/device", data=fields, allow_redirects=False, timeout=TIMEOUT_S)
    check(approved.status_code == 200, f"device approval: {approved.status_code}")
    device_session = OAuth2Session(client_id, token_endpoint_auth_method="none", timeout=TIMEOUT_S)
    device_token = device_session.fetch_token(
        metadata["token_endpoint"], grant_type=DEVICE_GRANT, device_code=started["device_code"]
    )
    me = whoami(base, device_token["access_token"])
    check(me.status_code == 200 and me.json()["device_id"] == device_id2, f"device grant whoami: {me.text}")
    print("device authorization grant: ok")

    revoked = device_session.revoke_token(
        metadata["revocation_endpoint"], token=device_token["refresh_token"], token_type_hint="refresh_token"
    )
    check(revoked.status_code == 200, f"revocation: {revoked.status_code}")
    check(whoami(base, device_token["access_token"]).status_code == 401, "revocation ended the access token")
    print("revocation: ok")

    openid_connect(base, browser)
    confidential_clients(base, browser, metadata)
    print("authlib: all checks passed")


def confidential_clients(base, browser, metadata):
    """Confidential web clients: the secret from registration, sent as Authlib sends it."""
    check(
        {"client_secret_basic", "client_secret_post"} <= set(metadata["token_endpoint_auth_methods_supported"]),
        "confidential client methods not advertised",
    )
    redirect_uri = "https://confidential.example.org/callback"
    for method in ("client_secret_basic", "client_secret_post"):
        registration = requests.post(
            metadata["registration_endpoint"],
            json={
                "client_name": f"Confidential ({method})",
                "client_uri": "https://confidential.example.org/",
                "redirect_uris": [redirect_uri],
                "application_type": "web",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": method,
            },
            timeout=TIMEOUT_S,
        )
        check(registration.status_code == 201, f"{method} registration: {registration.status_code} {registration.text}")
        body = registration.json()
        check(body.get("client_secret") and body.get("token_endpoint_auth_method") == method, f"{method} registration: {body}")

        def session(secret):
            return OAuth2Session(
                body["client_id"],
                secret,
                scope="openid",
                redirect_uri=redirect_uri,
                code_challenge_method="S256",
                token_endpoint_auth_method=method,
                timeout=TIMEOUT_S,
            )

        oauth = session(body["client_secret"])
        verifier = generate_token(64)
        url, state = oauth.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier, nonce=generate_token(20)
        )
        _, callback = consent_answer(browser, base, url)
        token = oauth.fetch_token(
            metadata["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier
        )
        check("id_token" in token and token.get("refresh_token"), f"{method}: token response")
        # A wrong secret is refused without spending the refresh token; the right one works.
        error = token_error(
            lambda: session("not-the-secret").refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
        )
        check(error == "invalid_client", f"{method} with a wrong secret: {error}")
        refreshed = oauth.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
        check(refreshed.get("access_token") and refreshed.get("refresh_token") != token["refresh_token"], f"{method}: refresh")
    print("confidential clients (client_secret_basic, client_secret_post): ok")


def consent_answer(browser, base, url, decision="allow"):
    """The consent page for `url` (the browser is signed in already), answered; the callback."""
    consent = browser.get(url, allow_redirects=False, timeout=TIMEOUT_S)
    check(consent.status_code == 200 and "Allow access?" in consent.text, f"consent page: {consent.status_code}")
    fields = form(consent.text, "/oauth2/authorize")
    fields["decision"] = decision
    answer = browser.post(f"{base}/oauth2/authorize", data=fields, allow_redirects=False, timeout=TIMEOUT_S)
    check(answer.status_code == 303, f"consent answer: {answer.status_code}")
    return consent.text, answer.headers["Location"]


def token_error(call):
    """Runs an Authlib token call that must fail; returns the OAuth error code."""
    try:
        call()
    except OAuthError as error:
        return error.error
    check(False, "a token request that must fail succeeded")


def openid_connect(base, browser):
    """Another service ("log in with haetae") through OpenID Connect."""
    config = requests.get(f"{base}/.well-known/openid-configuration", timeout=TIMEOUT_S).json()
    issuer = config["issuer"]
    check(issuer.rstrip("/") == base, f"issuer {issuer}")
    for field in ("jwks_uri", "userinfo_endpoint", "authorization_endpoint", "token_endpoint"):
        check(field in config, f"discovery lacks {field}")
    check("ES256" in config["id_token_signing_alg_values_supported"], "ES256 not advertised")
    check("openid" in config["scopes_supported"], "openid not advertised")

    redirect_uri = "https://shop.example.org/login/callback"
    registration = requests.post(
        config["registration_endpoint"],
        json={
            "client_name": "Shop",
            "client_uri": "https://shop.example.org/",
            "redirect_uris": [redirect_uri],
            "application_type": "web",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
        timeout=TIMEOUT_S,
    )
    check(registration.status_code == 201, f"RP registration: {registration.status_code} {registration.text}")
    client_id = registration.json()["client_id"]

    def session():
        return OAuth2Session(
            client_id,
            scope="openid profile",
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
            timeout=TIMEOUT_S,
        )

    def start(oauth, nonce):
        verifier = generate_token(64)
        url, state = oauth.create_authorization_url(config["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
        return url, state, verifier

    oauth = session()
    nonce = generate_token(20)
    url, state, verifier = start(oauth, nonce)
    page, callback = consent_answer(browser, base, url)
    check("no access to your messages" in page, "the consent page says the service gets no Matrix access")
    check(callback.startswith(redirect_uri + "?"), "the callback goes to the registered redirect URI")
    token = oauth.fetch_token(config["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier)
    check("id_token" in token, "the token response has an id_token")

    # What a relying party does offline: verify the signature with the published keys, then the
    # claims with OpenID Connect's rules.
    jwks = requests.get(config["jwks_uri"], timeout=TIMEOUT_S).json()
    decoded = jose_jwt.decode(token["id_token"], KeySet.import_key_set(jwks), algorithms=["ES256"])
    check(decoded.header.get("alg") == "ES256" and decoded.header.get("kid"), f"id_token header {decoded.header}")
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        options={"iss": {"essential": True, "value": issuer}, "aud": {"essential": True, "value": client_id}},
        params={"nonce": nonce, "client_id": client_id, "access_token": token["access_token"]},
    )
    claims.validate(leeway=5)
    check(decoded.claims["nonce"] == nonce, "nonce echoed")
    check(decoded.claims["exp"] > time.time(), "exp in the future")
    check(decoded.claims["sub"].startswith("@"), f"sub is a Matrix user id: {decoded.claims['sub']}")
    check("preferred_username" in decoded.claims, "profile claims in the id_token")
    # A token signed by another key, or altered, does not verify.
    head, body, signature = token["id_token"].split(".")
    tampered = ".".join([head, body[:-2] + ("AA" if body[-2:] != "AA" else "BB"), signature])
    try:
        jose_jwt.decode(tampered, KeySet.import_key_set(jwks), algorithms=["ES256"])
        check(False, "a tampered id_token verified")
    except Exception:
        pass
    # The wrong nonce is caught by the claim rules.
    wrong = CodeIDToken(
        decoded.claims,
        decoded.header,
        options={"iss": {"value": issuer}, "aud": {"value": client_id}},
        params={"nonce": "another", "client_id": client_id},
    )
    try:
        wrong.validate(leeway=5)
        check(False, "a wrong nonce validated")
    except Exception:
        pass
    print("OpenID Connect id_token (signature, iss, aud, nonce, exp, at_hash): ok")

    info = oauth.get(config["userinfo_endpoint"], timeout=TIMEOUT_S)
    check(info.status_code == 200 and info.json()["sub"] == decoded.claims["sub"], f"userinfo: {info.text}")
    check(whoami(base, token["access_token"]).status_code == 401, "a sign-in token is no Matrix access token")
    refreshed = oauth.refresh_token(config["token_endpoint"], refresh_token=token["refresh_token"])
    again = jose_jwt.decode(refreshed["id_token"], KeySet.import_key_set(jwks), algorithms=["ES256"])
    check(again.claims["sub"] == decoded.claims["sub"] and "nonce" not in again.claims, "refreshed id_token")
    print("OpenID Connect userinfo and refresh: ok")

    # Refusals, each with its OAuth error code.
    oauth = session()
    url, state, verifier = start(oauth, generate_token(20))
    _, callback = consent_answer(browser, base, url)
    stranger = OAuth2Session("cNotRegisteredAnywhere", redirect_uri=redirect_uri, token_endpoint_auth_method="none", timeout=TIMEOUT_S)
    error = token_error(lambda: stranger.fetch_token(config["token_endpoint"], authorization_response=callback, code_verifier=verifier))
    check(error == "invalid_client", f"unknown client: {error}")
    error = token_error(
        lambda: oauth.fetch_token(config["token_endpoint"], authorization_response=callback, state=state, code_verifier=generate_token(64))
    )
    check(error == "invalid_grant", f"wrong PKCE verifier: {error}")
    oauth.fetch_token(config["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier)
    error = token_error(
        lambda: oauth.fetch_token(config["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier)
    )
    check(error == "invalid_grant", f"reused code: {error}")
    elsewhere = OAuth2Session(client_id, scope="openid", redirect_uri="https://evil.example.net/cb", code_challenge_method="S256", timeout=TIMEOUT_S)
    url, _ = elsewhere.create_authorization_url(config["authorization_endpoint"], code_verifier=generate_token(64))
    page = browser.get(url, allow_redirects=False, timeout=TIMEOUT_S)
    check(page.status_code == 400 and "Location" not in page.headers, f"unregistered redirect URI: {page.status_code}")
    bad_scope = OAuth2Session(client_id, scope="openid email", redirect_uri=redirect_uri, code_challenge_method="S256", timeout=TIMEOUT_S)
    url, _ = bad_scope.create_authorization_url(config["authorization_endpoint"], code_verifier=generate_token(64))
    page = browser.get(url, allow_redirects=False, timeout=TIMEOUT_S)
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(page.headers.get("Location", "")).query)
    check(page.status_code == 303 and params.get("error") == ["invalid_scope"], f"unknown scope: {page.status_code} {params}")
    print("OpenID Connect refusals (invalid_client, invalid_grant, redirect URI, invalid_scope): ok")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
