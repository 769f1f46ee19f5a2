"""An affiliated service that signs people in with haetae (OpenID Connect): a page that says who
is signed in and counts their visits.

    python demo_rp.py ISSUER_BASE_URL LISTEN_PORT

It uses Authlib for the authorization code flow with PKCE and joserfc plus Authlib's CodeIDToken
rules to verify id_tokens, and nothing hand-written for tokens. At start it discovers the provider,
registers itself (a native client with a loopback redirect URI, since it listens on plain http)
and fetches the JWKS. After that a signed-in person's visits never reach haetae: the service
verified the id_token offline once and keeps its own session, so it keeps working while no haetae
data center can be reached. Sessions live in this process (it is a demo, not a deployment).
"""

import html
import http.server
import os
import secrets
import sys
import threading
import time
import urllib.parse
import warnings

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # the provider may be plain http on loopback

import requests  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from joserfc import jwt as jose_jwt  # noqa: E402
from joserfc.jwk import KeySet  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from authlib.oidc.core import CodeIDToken  # noqa: E402

TIMEOUT_S = 10
SESSION_COOKIE = "demo_rp_session"
SESSION_LIFETIME_S = 8 * 3600
MAX_PENDING = 1000
MAX_SESSIONS = 10000


class Provider:
    """What the service learned about haetae at start."""

    def __init__(self, base, redirect_uri):
        self.config = requests.get(f"{base.rstrip('/')}/.well-known/openid-configuration", timeout=TIMEOUT_S).json()
        registration = requests.post(
            self.config["registration_endpoint"],
            json={
                "client_name": "Demo service",
                "client_uri": "https://demo-service.example.org/",
                "application_type": "native",
                "redirect_uris": ["http://127.0.0.1/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
            timeout=TIMEOUT_S,
        )
        registration.raise_for_status()
        self.client_id = registration.json()["client_id"]
        self.redirect_uri = redirect_uri
        self.keys = self.fetch_keys()

    def fetch_keys(self):
        return KeySet.import_key_set(requests.get(self.config["jwks_uri"], timeout=TIMEOUT_S).json())

    def session(self):
        return OAuth2Session(
            self.client_id,
            scope="openid profile",
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
            timeout=TIMEOUT_S,
        )

    def verify(self, id_token, nonce, access_token):
        """The id_token's claims, verified offline; refetches the JWKS once for an unknown key."""
        try:
            decoded = jose_jwt.decode(id_token, self.keys, algorithms=["ES256"])
        except Exception:
            self.keys = self.fetch_keys()
            decoded = jose_jwt.decode(id_token, self.keys, algorithms=["ES256"])
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            options={"iss": {"essential": True, "value": self.config["issuer"]}, "aud": {"essential": True, "value": self.client_id}},
            params={"nonce": nonce, "client_id": self.client_id, "access_token": access_token},
        )
        claims.validate(leeway=30)
        return dict(decoded.claims)


class State:
    def __init__(self, provider):
        self.provider = provider
        self.lock = threading.Lock()
        self.pending = {}  # state -> (nonce, code verifier)
        self.sessions = {}  # cookie -> {"sub", "name", "visits", "expires"}


def page(title, body):
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1d2330}}
.card{{border:1px solid #d6dbe4;border-radius:12px;padding:1.5rem}}a.button{{display:inline-block;background:#2563eb;color:#fff;
padding:.6rem 1rem;border-radius:8px;text-decoration:none}}.count{{font-size:2.5rem;font-weight:700}}</style></head>
<body><h1>Demo service</h1><div class="card">{body}</div></body></html>"""


def make_handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # no request log: URLs carry codes
            pass

        def send(self, status, body=None, headers=()):
            data = (body or "").encode()
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            if body is not None:
                self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def cookie(self):
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == SESSION_COOKIE:
                    return value
            return None

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/":
                return self.home()
            if url.path == "/login":
                return self.login()
            if url.path == "/callback":
                return self.callback(query)
            if url.path == "/logout":
                with state.lock:
                    state.sessions.pop(self.cookie(), None)
                return self.send(303, None, [("Location", "/"), ("Set-Cookie", f"{SESSION_COOKIE}=; Path=/; Max-Age=0")])
            return self.send(404, page("Not found", "<p>Not found.</p>"))

        def home(self):
            with state.lock:
                session = state.sessions.get(self.cookie())
                if session and session["expires"] < time.time():
                    session = None
                if session:
                    session["visits"] += 1
                    visits = session["visits"]
            if not session:
                body = '<p>You are not signed in.</p><p><a class="button" href="/login">Sign in with haetae</a></p>'
                return self.send(200, page("Demo service", body))
            body = (
                f'<p>Signed in as <strong id="name">{html.escape(session["name"])}</strong> '
                f'(<code id="sub">{html.escape(session["sub"])}</code>).</p>'
                f'<p>Visits this session:</p><p class="count" id="visits">{visits}</p><p><a href="/logout">Sign out</a></p>'
            )
            return self.send(200, page("Demo service", body))

        def login(self):
            oauth = state.provider.session()
            nonce, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(48)
            url, request_state = oauth.create_authorization_url(
                state.provider.config["authorization_endpoint"], code_verifier=verifier, nonce=nonce
            )
            with state.lock:
                if len(state.pending) >= MAX_PENDING:
                    state.pending.pop(next(iter(state.pending)))
                state.pending[request_state] = (nonce, verifier)
            return self.send(302, None, [("Location", url)])

        def callback(self, query):
            with state.lock:
                pending = state.pending.pop(query.get("state", ""), None)
            if pending is None or "code" not in query:
                reason = html.escape(query.get("error", "the sign-in expired or did not start here"))
                return self.send(400, page("Sign-in failed", f"<p>Sign-in failed: {reason}.</p><p><a href=\"/\">Back</a></p>"))
            nonce, verifier = pending
            oauth = state.provider.session()
            try:
                token = oauth.fetch_token(
                    state.provider.config["token_endpoint"],
                    code=query["code"],
                    code_verifier=verifier,
                )
                claims = state.provider.verify(token["id_token"], nonce, token["access_token"])
            except Exception as error:  # a refused code or a token that does not verify
                return self.send(400, page("Sign-in failed", f"<p>Sign-in failed: {html.escape(type(error).__name__)}.</p>"))
            cookie = secrets.token_urlsafe(32)
            with state.lock:
                if len(state.sessions) >= MAX_SESSIONS:
                    state.sessions.pop(next(iter(state.sessions)))
                state.sessions[cookie] = {
                    "sub": claims["sub"],
                    "name": claims.get("name") or claims.get("preferred_username") or claims["sub"],
                    "visits": 0,
                    "expires": time.time() + SESSION_LIFETIME_S,
                }
            set_cookie = f"{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_LIFETIME_S}"
            return self.send(303, None, [("Location", "/"), ("Set-Cookie", set_cookie)])

    return Handler


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    base, port = sys.argv[1], int(sys.argv[2])
    provider = Provider(base, f"http://127.0.0.1:{port}/callback")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(State(provider)))
    print(f"demo service on http://127.0.0.1:{port}/ (client {provider.client_id})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
