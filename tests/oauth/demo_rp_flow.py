"""Signs a person in to the demo service (demo_rp.py) with haetae, as a browser without
JavaScript would, and checks the service's page says who they are and counts their visits.

    python demo_rp_flow.py BASE_URL

Starts the demo service on a free loopback port and stops it at the end. Exits non-zero on the
first failure; every request has a timeout and the whole run a deadline.
"""

import os
import socket
import subprocess
import sys
import time

import requests

from authlib_flow import TIMEOUT_S, check, form, register_user

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url, process, deadline_s=20):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        check(process.poll() is None, "the demo service exited at start")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    check(False, "the demo service did not come up")


def main(base):
    base = base.rstrip("/")
    port = free_port()
    service = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "demo_rp.py"), base, str(port)])
    try:
        wait_until_up(f"{service}/", process)
        username, password = register_user(base)
        browser = requests.Session()
        home = browser.get(f"{service}/", timeout=TIMEOUT_S)
        check("Sign in with haetae" in home.text, "the service offers to sign in")

        # The service sends the browser to haetae; the person signs in and allows it.
        start = browser.get(f"{service}/login", allow_redirects=False, timeout=TIMEOUT_S)
        check(start.status_code == 302 and start.headers["Location"].startswith(base), f"login redirect: {start.status_code}")
        page = browser.get(start.headers["Location"], allow_redirects=False, timeout=TIMEOUT_S)
        fields = form(page.text, "/oauth2/login")
        fields.update(username=username, password=password)
        signed_in = browser.post(f"{base}/oauth2/login", data=fields, allow_redirects=False, timeout=TIMEOUT_S)
        check(signed_in.status_code == 303, f"sign in: {signed_in.status_code}")
        consent = browser.get(base + signed_in.headers["Location"], allow_redirects=False, timeout=TIMEOUT_S)
        check("Demo service" in consent.text and "no access to your messages" in consent.text, "consent names the service")
        fields = form(consent.text, "/oauth2/authorize")
        fields["decision"] = "allow"
        answer = browser.post(f"{base}/oauth2/authorize", data=fields, allow_redirects=False, timeout=TIMEOUT_S)
        callback = answer.headers.get("Location", "")
        check(answer.status_code == 303 and callback.startswith(f"{service}/callback?"), f"callback: {callback[:60]}")

        # The service exchanges the code, verifies the id_token and keeps its own session.
        done = browser.get(callback, allow_redirects=False, timeout=TIMEOUT_S)
        check(done.status_code == 303, f"the service's callback: {done.status_code} {done.text[:200]}")
        first = browser.get(f"{service}/", timeout=TIMEOUT_S).text
        check('id="visits">1<' in first, "first visit counted")
        check(f"@{username}:" in first, "the service knows who signed in")
        second = browser.get(f"{service}/", timeout=TIMEOUT_S).text
        check('id="visits">2<' in second, "second visit counted")
        # A replayed callback (the code again) does not sign anyone in.
        replay = requests.get(callback, allow_redirects=False, timeout=TIMEOUT_S)
        check(replay.status_code == 400, f"replayed callback: {replay.status_code}")
        print("demo service: signed in with haetae, visits counted: ok")
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
