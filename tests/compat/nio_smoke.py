#!/usr/bin/env python3
"""Client-Server API compatibility smoke test driven by matrix-nio.

Usage: nio_smoke.py BASE_URL        e.g. nio_smoke.py http://127.0.0.1:8008

The flow only uses matrix-nio's public AsyncClient API, so a failure means the
homeserver answered something a real, third-party client library does not
accept. It needs a homeserver that allows open registration with the
m.login.dummy user-interactive auth stage (no e-mail / captcha / token).

Prints one line per step, then "nio compat: OK (N checks)". On the first
failure it prints "nio compat: FAIL ..." and exits 1. The whole run is bounded
(TOTAL_TIMEOUT seconds); every request has its own timeout as well.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import struct
import sys
import time
import zlib
from importlib import metadata

try:
    from nio import (
        AsyncClient,
        AsyncClientConfig,
        JoinResponse,
        LoginInfoResponse,
        LoginResponse,
        LogoutResponse,
        MemoryDownloadResponse,
        MessageDirection,
        ProfileGetDisplayNameResponse,
        ProfileSetDisplayNameResponse,
        RegisterResponse,
        RoomCreateResponse,
        RoomInviteResponse,
        RoomMessagesResponse,
        RoomMessageText,
        RoomPreset,
        RoomSendResponse,
        RoomVisibility,
        SyncResponse,
        UploadResponse,
        WhoamiResponse,
    )
    from nio.responses import ErrorResponse, RegisterInteractiveResponse
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"nio compat: FAIL: cannot import matrix-nio ({exc}); run tests/compat/install.sh",
          file=sys.stderr)
    sys.exit(2)

TOTAL_TIMEOUT = 55.0      # seconds for the whole script (brief: < 60 s)
REQUEST_TIMEOUT = 15.0    # seconds for one HTTP request
STEP_TIMEOUT = 20.0       # seconds for one step (may be several requests)
SYNC_POLL_MS = 2000       # long-poll timeout passed to /sync
PASSWORD = "compat-" + secrets.token_hex(8)


class CompatFailure(Exception):
    pass


class _NioWarnings(logging.Handler):
    """Keeps nio's own complaints (e.g. "Error validating response: 'x' is a
    required property") instead of printing them; they are quoted in a
    failure message, which is where they help."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


NIO_WARNINGS = _NioWarnings()
_nio_logger = logging.getLogger("nio")
_nio_logger.addHandler(NIO_WARNINGS)
_nio_logger.setLevel(logging.WARNING)
_nio_logger.propagate = False


class Runner:
    def __init__(self) -> None:
        self.checks = 0
        self.step_no = 0
        self.step_name = "start-up"

    def check(self, cond: bool, what: str) -> None:
        if not cond:
            raise CompatFailure(what)
        self.checks += 1

    def ok(self, resp, cls, what: str):
        """Check that a nio response is of the expected success class."""
        if not isinstance(resp, cls):
            detail = str(resp) if isinstance(resp, ErrorResponse) else repr(resp)
            if NIO_WARNINGS.records:
                detail += f" [nio said: {NIO_WARNINGS.records[-1]}]"
            raise CompatFailure(f"{what}: expected {cls.__name__}, got {detail}")
        self.checks += 1
        return resp

    async def step(self, name: str, coro):
        self.step_no += 1
        self.step_name = name
        NIO_WARNINGS.records.clear()
        t0 = time.monotonic()
        try:
            result = await asyncio.wait_for(coro, STEP_TIMEOUT)
        except asyncio.TimeoutError:
            # either the whole step ran out of time, or one request got no
            # answer within REQUEST_TIMEOUT (aiohttp raises the same error)
            if time.monotonic() - t0 >= STEP_TIMEOUT - 0.1:
                raise CompatFailure(f"step timed out after {STEP_TIMEOUT:.0f} s")
            raise CompatFailure(f"an HTTP request got no answer within {REQUEST_TIMEOUT:.0f} s")
        detail = f" ({result})" if isinstance(result, str) and result else ""
        print(f"[nio] {self.step_no:02d} {name}{detail} ... ok "
              f"[{(time.monotonic() - t0) * 1000:.0f} ms]", flush=True)
        return result


def make_png(width: int = 4, height: int = 3) -> bytes:
    """A tiny valid RGB PNG, generated here so no file has to ship."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(
        b"\x00" + b"".join(bytes(((x * 60) & 255, (y * 80) & 255, 0x9C)) for x in range(width))
        for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def new_client(base: str, user: str = "") -> AsyncClient:
    cfg = AsyncClientConfig(
        max_limit_exceeded=0,      # a 429 is returned to us, never slept on
        max_timeouts=0,            # a timeout is raised, never retried
        request_timeout=REQUEST_TIMEOUT,
        store_sync_tokens=False,
        encryption_enabled=False,
    )
    return AsyncClient(base, user=user, config=cfg)


def room_text_events(resp: SyncResponse, room_id: str, sender: str, tag: str):
    room = resp.rooms.join.get(room_id)
    if room is None:
        return []
    return [ev for ev in room.timeline.events
            if isinstance(ev, RoomMessageText) and ev.sender == sender and tag in ev.body]


async def run(base: str, r: Runner) -> None:
    suffix = secrets.token_hex(4)
    a = new_client(base)
    b_reg = new_client(base)
    b = None
    clients = [a, b_reg]
    try:
        # ---------------------------------------------------------------- login flows
        async def login_flows():
            resp = r.ok(await a.login_info(), LoginInfoResponse, "GET /login")
            r.check("m.login.password" in resp.flows,
                    f"GET /login does not advertise m.login.password: {resp.flows}")
            return ", ".join(resp.flows)
        await r.step("GET /login lists m.login.password", login_flows())

        # ---------------------------------------------------------------- register A
        user_a = f"nioa_{suffix}"

        async def register_a():
            resp = r.ok(await a.register(user_a, PASSWORD, device_name="nio-compat-A"),
                        RegisterResponse, "register A (m.login.dummy)")
            r.check(resp.user_id.startswith(f"@{user_a}:"), f"unexpected user_id {resp.user_id}")
            r.check(bool(resp.access_token), "register returned no access_token")
            r.check(bool(resp.device_id), "register returned no device_id")
            r.check(a.access_token == resp.access_token, "nio did not adopt the access token")
            return resp.user_id
        await r.step("register A with m.login.dummy (one-shot auth)", register_a())

        # ---------------------------------------------------------------- register B
        user_b = f"niob_{suffix}"

        async def register_b():
            # Step 1: a request without a completed stage must give the 401 UIA
            # answer (flows + session), as nio's register_with_token relies on.
            first = r.ok(
                await b_reg.register_interactive(
                    user_b, PASSWORD, auth_dict={"initial_device_display_name": "nio-compat-B"}),
                RegisterInteractiveResponse,
                "register B, first UIA round (nio, like its register_with_token, sends an auth "
                "object with neither 'type' nor 'session' and expects the 401 flows/session answer)")
            r.check(bool(first.session), "UIA 401 answer has no session")
            # Step 2: complete m.login.dummy inside that session.
            resp = r.ok(
                await b_reg.register(user_b, PASSWORD, device_name="nio-compat-B-reg",
                                     session_token=first.session),
                RegisterResponse, "register B, m.login.dummy with session")
            r.check(resp.user_id.startswith(f"@{user_b}:"), f"unexpected user_id {resp.user_id}")
            r.check(resp.user_id != a.user_id, "A and B got the same user_id")
            return f"{resp.user_id}, session {first.session[:8]}..."
        await r.step("register B via 401 session + m.login.dummy", register_b())

        # ---------------------------------------------------------------- login B
        async def login_b():
            nonlocal b
            b = new_client(base, user=b_reg.user_id)
            clients.append(b)
            resp = r.ok(await b.login(PASSWORD, device_name="nio-compat-B-login"),
                        LoginResponse, "password login B")
            r.check(resp.user_id == b_reg.user_id,
                    f"login user_id {resp.user_id} != registered {b_reg.user_id}")
            r.check(resp.access_token != b_reg.access_token, "login reused the registration token")
            r.check(resp.device_id != b_reg.device_id, "login reused the registration device_id")
            return f"device {resp.device_id}"
        await r.step("password login B (m.login.password)", login_b())

        async def bad_login():
            c = new_client(base, user=b_reg.user_id)
            clients.append(c)
            resp = await c.login("wrong-" + PASSWORD)
            r.check(not isinstance(resp, LoginResponse), "login with a wrong password succeeded")
            r.check(getattr(resp, "status_code", None) == "M_FORBIDDEN",
                    f"wrong password: expected M_FORBIDDEN, got {resp}")
        await r.step("password login with wrong password -> M_FORBIDDEN", bad_login())

        async def whoami():
            for c in (a, b, b_reg):
                resp = r.ok(await c.whoami(), WhoamiResponse, f"whoami {c.user_id}")
                r.check(resp.user_id == c.user_id, f"whoami says {resp.user_id}, expected {c.user_id}")
                r.check(resp.device_id == c.device_id,
                        f"whoami device {resp.device_id}, expected {c.device_id}")
        await r.step("whoami for all three sessions", whoami())

        # ---------------------------------------------------------------- room
        room_name = f"nio compat {suffix}"
        room_topic = f"topic for {suffix}"
        room_id = ""

        async def create_room():
            nonlocal room_id
            resp = r.ok(await a.room_create(visibility=RoomVisibility.private, name=room_name,
                                            topic=room_topic, preset=RoomPreset.private_chat),
                        RoomCreateResponse, "createRoom")
            r.check(resp.room_id.startswith("!"), f"odd room_id {resp.room_id}")
            room_id = resp.room_id
            return room_id
        await r.step("A creates private_chat room with name + topic", create_room())

        async def invite():
            r.ok(await a.room_invite(room_id, b.user_id), RoomInviteResponse, "invite B")
        await r.step("A invites B", invite())

        b_token = None

        async def b_sees_invite():
            nonlocal b_token
            resp = r.ok(await b.sync(timeout=0, full_state=True), SyncResponse, "B initial sync")
            b_token = resp.next_batch
            while room_id not in resp.rooms.invite:
                resp = r.ok(await b.sync(timeout=SYNC_POLL_MS, since=b_token), SyncResponse,
                            "B incremental sync (waiting for invite)")
                r.check(resp.next_batch is not None, "sync without next_batch")
                b_token = resp.next_batch
            r.check(room_id in resp.rooms.invite, "invite missing from rooms.invite")
        await r.step("B sees the invite via /sync", b_sees_invite())

        async def b_joins():
            nonlocal b_token
            resp = r.ok(await b.join(room_id), JoinResponse, "B joins")
            r.check(resp.room_id == room_id, f"join returned {resp.room_id}, expected {room_id}")
            # wait until the join shows up in B's sync, then remember that token
            while True:
                resp = r.ok(await b.sync(timeout=SYNC_POLL_MS, since=b_token), SyncResponse,
                            "B incremental sync (waiting for join)")
                b_token = resp.next_batch
                if room_id in resp.rooms.join:
                    break
            room = b.rooms.get(room_id)
            r.check(room is not None, "nio has no room object after the join sync")
            r.check(room.name == room_name, f"room name via sync is {room.name!r}, expected {room_name!r}")
            r.check(room.topic == room_topic, f"room topic via sync is {room.topic!r}")
            r.check(a.user_id in room.users and b.user_id in room.users,
                    f"members via sync: {sorted(room.users)}")
        await r.step("B joins; join, name, topic, members arrive via /sync", b_joins())

        # ---------------------------------------------------------------- messages
        sent: list[str] = []
        bodies = [f"hello {i} from nio {suffix}" for i in (1, 2, 3)]
        txn_ids = [f"niotxn-{suffix}-{i}" for i in (1, 2, 3)]

        async def send_three():
            for body, txn in zip(bodies, txn_ids):
                resp = r.ok(await a.room_send(room_id, "m.room.message",
                                              {"msgtype": "m.text", "body": body}, tx_id=txn),
                            RoomSendResponse, f"send {txn}")
                r.check(resp.event_id.startswith("$"), f"odd event_id {resp.event_id}")
                sent.append(resp.event_id)
            r.check(len(set(sent)) == 3, f"event ids not distinct: {sent}")
        await r.step("A sends 3 messages with explicit txn ids", send_three())

        async def resend():
            resp = r.ok(await a.room_send(room_id, "m.room.message",
                                          {"msgtype": "m.text", "body": bodies[1]},
                                          tx_id=txn_ids[1]),
                        RoomSendResponse, "re-send with same txn id")
            r.check(resp.event_id == sent[1],
                    f"same txn id gave a new event_id {resp.event_id} (first was {sent[1]})")
            return resp.event_id
        await r.step("A re-sends message 2 with the same txn id -> same event_id", resend())

        async def b_receives():
            nonlocal b_token
            seen = []
            while len(seen) < 3:
                resp = r.ok(await b.sync(timeout=SYNC_POLL_MS, since=b_token), SyncResponse,
                            "B incremental sync (waiting for messages)")
                got = room_text_events(resp, room_id, a.user_id, suffix)
                r.check(resp.next_batch != b_token or not got,
                        "sync returned new events but did not advance next_batch")
                b_token = resp.next_batch
                seen += [ev.event_id for ev in got]
            # one more short sync: nothing of ours may come again (txn dedup)
            resp = r.ok(await b.sync(timeout=500, since=b_token), SyncResponse, "B trailing sync")
            b_token = resp.next_batch
            seen += [ev.event_id for ev in room_text_events(resp, room_id, a.user_id, suffix)]
            r.check(seen == sent, f"B saw {seen}, expected exactly {sent} in this order")
        await r.step("B syncs incrementally: 3 messages, in order, exactly once", b_receives())

        async def b_paginates():
            resp = r.ok(await b.room_messages(room_id, start=b_token, direction=MessageDirection.back,
                                              limit=50),
                        RoomMessagesResponse, "GET /messages dir=b")
            ours = [ev for ev in resp.chunk if isinstance(ev, RoomMessageText) and suffix in ev.body]
            r.check([ev.event_id for ev in ours] == list(reversed(sent)),
                    f"/messages dir=b gave {[ev.event_id for ev in ours]}, "
                    f"expected {list(reversed(sent))}")
            r.check([ev.body for ev in ours] == list(reversed(bodies)), "bodies differ in /messages")
            r.check(all(ev.sender == a.user_id for ev in ours), "wrong sender in /messages")
            r.check(bool(resp.start), "/messages without start token")
            return f"{len(resp.chunk)} events"
        await r.step("B paginates /messages backwards", b_paginates())

        async def long_poll_wakeup():
            nonlocal b_token
            body = f"wake-up call from nio {suffix}"

            async def send_later():
                await asyncio.sleep(0.5)
                return await a.room_send(room_id, "m.room.message",
                                         {"msgtype": "m.text", "body": body},
                                         tx_id=f"niotxn-{suffix}-wake")
            sender = asyncio.create_task(send_later())
            t0 = time.monotonic()
            got = []
            while not got and time.monotonic() - t0 < 10:
                resp = r.ok(await b.sync(timeout=10000, since=b_token), SyncResponse,
                            "B long-poll sync")
                b_token = resp.next_batch
                got = [ev for ev in room_text_events(resp, room_id, a.user_id, suffix)
                       if ev.body == body]
            elapsed = time.monotonic() - t0
            sent_resp = r.ok(await sender, RoomSendResponse, "send wake-up message")
            r.check(len(got) == 1 and got[0].event_id == sent_resp.event_id,
                    f"long-poll sync did not deliver the new message (got {got})")
            r.check(elapsed < 5, f"long-poll /sync took {elapsed:.1f} s to wake up (limit 5 s)")
            return f"woke after {elapsed * 1000:.0f} ms"
        await r.step("B's long-poll /sync (timeout 10 s) wakes on a new message", long_poll_wakeup())

        # ---------------------------------------------------------------- media
        png = make_png()
        mxc = ""

        async def upload():
            nonlocal mxc
            resp, keys = await a.upload(io.BytesIO(png), content_type="image/png",
                                        filename="compat.png", filesize=len(png))
            r.ok(resp, UploadResponse, "upload PNG")
            r.check(resp.content_uri.startswith("mxc://"), f"odd content_uri {resp.content_uri}")
            mxc = resp.content_uri
            r.ok(await a.room_send(room_id, "m.room.message",
                                   {"msgtype": "m.image", "body": "compat.png", "url": mxc,
                                    "info": {"mimetype": "image/png", "size": len(png),
                                             "w": 4, "h": 3}},
                                   tx_id=f"niotxn-{suffix}-img"),
                 RoomSendResponse, "send m.image")
            return f"{mxc}, {len(png)} bytes"
        await r.step("A uploads a PNG and posts it", upload())

        async def download():
            resp = r.ok(await b.download(mxc=mxc), MemoryDownloadResponse, "B downloads")
            r.check(resp.body == png, f"downloaded {len(resp.body)} bytes differ from the upload")
            r.check((resp.content_type or "").split(";")[0].strip() == "image/png",
                    f"download content-type {resp.content_type!r}")
        await r.step("B downloads it byte-identical", download())

        # ---------------------------------------------------------------- profile
        display = f"Nio Alice {suffix}"

        async def displayname():
            r.ok(await a.set_displayname(display), ProfileSetDisplayNameResponse, "set displayname")
            resp = r.ok(await b.get_displayname(a.user_id), ProfileGetDisplayNameResponse,
                        "B gets A's displayname")
            r.check(resp.displayname == display,
                    f"B sees displayname {resp.displayname!r}, expected {display!r}")
        await r.step("A sets display name, B reads it", displayname())

        # ---------------------------------------------------------------- logout
        async def logout():
            tokens = [(c.user_id, c.access_token) for c in (a, b, b_reg)]
            for c in (a, b, b_reg):
                r.ok(await c.logout(), LogoutResponse, f"logout {c.user_id}/{c.device_id}")
            for user_id, token in tokens:
                c = new_client(base, user=user_id)
                clients.append(c)
                c.access_token = token
                c.user_id = user_id
                resp = await c.whoami()
                r.check(not isinstance(resp, WhoamiResponse),
                        f"old token of {user_id} still works after logout")
                r.check(getattr(resp, "status_code", None) == "M_UNKNOWN_TOKEN",
                        f"old token: expected M_UNKNOWN_TOKEN, got {resp}")
        await r.step("A and B log out; old tokens -> M_UNKNOWN_TOKEN", logout())
    finally:
        for c in clients:
            try:
                await asyncio.wait_for(c.close(), 5)
            except Exception:
                pass


async def main_async(base: str) -> int:
    r = Runner()
    try:
        await asyncio.wait_for(run(base, r), TOTAL_TIMEOUT)
    except CompatFailure as exc:
        print(f"nio compat: FAIL at step {r.step_no} '{r.step_name}': {exc}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"nio compat: FAIL: timed out after {TOTAL_TIMEOUT:.0f} s in step "
              f"{r.step_no} '{r.step_name}'", file=sys.stderr)
        return 1
    except Exception as exc:  # connection refused, bad JSON, nio exceptions ...
        print(f"nio compat: FAIL at step {r.step_no} '{r.step_name}': "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"nio compat: OK ({r.checks} checks)", flush=True)
    return 0


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].startswith(("http://", "https://")):
        print("usage: nio_smoke.py BASE_URL   (e.g. http://127.0.0.1:8008)", file=sys.stderr)
        return 2
    base = sys.argv[1].rstrip("/")
    print(f"[nio] matrix-nio {metadata.version('matrix-nio')} against {base}", flush=True)
    return asyncio.run(main_async(base))


if __name__ == "__main__":
    sys.exit(main())
