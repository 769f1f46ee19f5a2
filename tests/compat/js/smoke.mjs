#!/usr/bin/env node
// Client-Server API compatibility smoke test driven by matrix-js-sdk.
//
//   node smoke.mjs BASE_URL        e.g. node smoke.mjs http://127.0.0.1:8008
//
// Uses matrix-js-sdk's public API the way a client (Element) does, so a
// failure means the homeserver answered something a real, third-party client
// library does not accept. Needs open registration with the m.login.dummy
// user-interactive auth stage.
//
// Prints one line per step, then "js-sdk compat: OK (N checks)". On the first
// failure prints "js-sdk compat: FAIL ..." and exits 1. Hard limit 55 s.
// Set COMPAT_VERBOSE=1 to see the SDK's own log output.

import { readFileSync } from "node:fs";
import { deflateSync } from "node:zlib";

// --- Node 20 support ----------------------------------------------------------
// Newer matrix-js-sdk releases call Promise.withResolvers (Node >= 22). The
// pinned release does not need it, but keep the polyfill so a bump does not
// break on Node 20. It must run before the SDK is loaded, hence the dynamic
// import below.
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

const TOTAL_TIMEOUT_MS = 55_000;
const STEP_TIMEOUT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 15_000;
const VERBOSE = process.env.COMPAT_VERBOSE === "1";

// --- SDK log capture ----------------------------------------------------------
// The SDK logs (via loglevel) to console.* and looks the console methods up at
// call time. Our own output goes through `out`/`err`; the console methods only
// collect the SDK's lines, of which the last few are shown on failure.
const out = console.log.bind(console);
const err = console.error.bind(console);
const sdkLog = [];
for (const method of ["log", "info", "debug", "warn", "error", "trace"]) {
    const original = console[method].bind(console);
    console[method] = (...args) => {
        if (VERBOSE) original(...args);
        const line = args.map((a) => (a instanceof Error ? a.message : typeof a === "string" ? a : safeJson(a))).join(" ");
        sdkLog.push(`${method}: ${line}`.slice(0, 300));
        if (sdkLog.length > 40) sdkLog.shift();
    };
}

function safeJson(v) {
    try {
        return JSON.stringify(v);
    } catch {
        return String(v);
    }
}

const sdk = await import("matrix-js-sdk");
const { ClientEvent, RoomEvent, Preset, Visibility, SyncState } = sdk;

// --- harness ----------------------------------------------------------------------
class CompatFailure extends Error {}

let checks = 0;
let stepNo = 0;
let stepName = "start-up";
const clients = [];

function check(cond, what) {
    if (!cond) throw new CompatFailure(typeof what === "function" ? what() : what);
    checks += 1;
}

function describeError(e) {
    if (!e) return String(e);
    const parts = [];
    if (e.httpStatus) parts.push(`HTTP ${e.httpStatus}`);
    if (e.errcode) parts.push(e.errcode);
    parts.push(e.data?.error || e.message || String(e));
    return parts.join(" ");
}

/** Run an SDK call; turn a rejection into a CompatFailure that names the call. */
async function call(what, promise) {
    try {
        const v = await promise;
        checks += 1;
        return v;
    } catch (e) {
        if (e instanceof CompatFailure) throw e;
        throw new CompatFailure(`${what} failed: ${describeError(e)}`);
    }
}

/** Expect an SDK call to fail with the given errcode (and HTTP status). */
async function expectError(what, promise, errcode, status) {
    let err = null;
    try {
        await promise;
    } catch (e) {
        err = e;
    }
    check(err !== null, `${what}: expected ${errcode}, but the call succeeded`);
    check(err.errcode === errcode, () => `${what}: expected ${errcode}, got ${describeError(err)}`);
    if (status !== undefined) {
        check(err.httpStatus === status, () => `${what}: expected HTTP ${status}, got ${describeError(err)}`);
    }
    return err;
}

function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new CompatFailure(`${what} timed out after ${ms / 1000} s`)), ms);
        }),
    ]).finally(() => clearTimeout(timer));
}

async function step(name, fn) {
    stepNo += 1;
    stepName = name;
    const t0 = Date.now();
    const detail = await withTimeout(fn(), STEP_TIMEOUT_MS, "step");
    const extra = typeof detail === "string" && detail ? ` (${detail})` : "";
    out(`[js] ${String(stepNo).padStart(2, "0")} ${name}${extra} ... ok [${Date.now() - t0} ms]`);
}

/** Resolve once `predicate()` is true, re-checking whenever `emitter` emits `event`. */
function waitFor(emitter, event, predicate, ms, what) {
    return withTimeout(
        new Promise((resolve) => {
            if (predicate()) return resolve();
            const listener = () => {
                if (predicate()) {
                    emitter.removeListener(event, listener);
                    resolve();
                }
            };
            emitter.on(event, listener);
        }),
        ms,
        what,
    );
}

function newClient(baseUrl, extra = {}) {
    const c = sdk.createClient({ baseUrl, localTimeoutMs: REQUEST_TIMEOUT_MS, ...extra });
    clients.push(c);
    return c;
}

function crc32(buf) {
    let c = ~0;
    for (const byte of buf) {
        c ^= byte;
        for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
    }
    return ~c >>> 0;
}

/** A tiny valid RGB PNG, generated here so no file has to ship. */
function makePng(width = 3, height = 2) {
    const chunk = (kind, data) => {
        const len = Buffer.alloc(4);
        len.writeUInt32BE(data.length);
        const body = Buffer.concat([Buffer.from(kind, "ascii"), data]);
        const crc = Buffer.alloc(4);
        crc.writeUInt32BE(crc32(body));
        return Buffer.concat([len, body, crc]);
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(width, 0);
    ihdr.writeUInt32BE(height, 4);
    ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
    const rows = [];
    for (let y = 0; y < height; y++) {
        rows.push(0); // filter: none
        for (let x = 0; x < width; x++) rows.push((x * 90) & 255, (y * 120) & 255, 0x5a);
    }
    return Buffer.concat([
        Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        chunk("IHDR", ihdr),
        chunk("IDAT", deflateSync(Buffer.from(rows))),
        chunk("IEND", Buffer.alloc(0)),
    ]);
}

// --- the flow -----------------------------------------------------------------------
async function run(baseUrl) {
    const suffix = Math.random().toString(16).slice(2, 10);
    const password = `compat-${suffix}-${Math.random().toString(36).slice(2)}`;
    const anon = newClient(baseUrl);

    await step("GET /versions", async () => {
        const v = await call("GET /_matrix/client/versions", anon.getVersions());
        check(Array.isArray(v.versions) && v.versions.length > 0, `no versions in ${safeJson(v)}`);
        return v.versions.slice(-3).join(", ");
    });

    async function register(localpart) {
        const c = newClient(baseUrl);
        const body = { username: localpart, password, initial_device_display_name: `js-compat ${localpart}` };
        // First round: no auth -> 401 with flows + session (user-interactive auth).
        let uia = null;
        try {
            await c.registerRequest(body);
        } catch (e) {
            uia = e;
        }
        check(uia !== null, "register without auth succeeded; expected a 401 user-interactive auth answer");
        check(uia.httpStatus === 401, () => `register without auth: expected HTTP 401, got ${describeError(uia)}`);
        const data = uia.data || {};
        check(typeof data.session === "string" && data.session.length > 0, `401 has no session: ${safeJson(data)}`);
        check(
            Array.isArray(data.flows) && data.flows.some((f) => (f.stages || []).includes("m.login.dummy")),
            () => `no flow offers m.login.dummy: ${safeJson(data.flows)}`,
        );
        const res = await call(
            "register with m.login.dummy",
            c.registerRequest({ ...body, auth: { type: "m.login.dummy", session: data.session } }),
        );
        check(res.user_id?.startsWith(`@${localpart}:`), `unexpected user_id ${res.user_id}`);
        check(!!res.access_token && !!res.device_id, `register response lacks token/device: ${safeJson(res)}`);
        return res;
    }

    let regA;
    let regB;
    await step("register A (401 session, then m.login.dummy)", async () => {
        regA = await register(`jsa_${suffix}`);
        return regA.user_id;
    });
    await step("register B (401 session, then m.login.dummy)", async () => {
        regB = await register(`jsb_${suffix}`);
        check(regB.user_id !== regA.user_id, "A and B got the same user_id");
        return regB.user_id;
    });

    const a = newClient(baseUrl, { userId: regA.user_id, accessToken: regA.access_token, deviceId: regA.device_id });
    const b = newClient(baseUrl, { userId: regB.user_id, accessToken: regB.access_token, deviceId: regB.device_id });

    await step("whoami for A and B", async () => {
        for (const [c, reg] of [
            [a, regA],
            [b, regB],
        ]) {
            const w = await call("whoami", c.whoami());
            check(w.user_id === reg.user_id, `whoami says ${w.user_id}, expected ${reg.user_id}`);
        }
    });

    const roomName = `js compat ${suffix}`;
    const roomTopic = `js topic ${suffix}`;
    let roomId;
    await step("A creates a private_chat room with name + topic", async () => {
        const res = await call(
            "createRoom",
            a.createRoom({ preset: Preset.PrivateChat, visibility: Visibility.Private, name: roomName, topic: roomTopic }),
        );
        check(res.room_id?.startsWith("!"), `odd room_id ${res.room_id}`);
        roomId = res.room_id;
        return roomId;
    });

    await step("A invites B", async () => {
        await call("invite", a.invite(roomId, regB.user_id));
    });

    await step("B joins", async () => {
        const room = await call("joinRoom", b.joinRoom(roomId));
        check(room.roomId === roomId, `joinRoom returned room ${room.roomId}`);
    });

    // B's view of A's messages, filled from the live Room.timeline event.
    const received = [];
    b.on(RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
        if (!room || room.roomId !== roomId || toStartOfTimeline || removed) return;
        if (data && data.liveEvent === false) return;
        if (event.getType() !== "m.room.message" || event.getSender() !== regA.user_id) return;
        received.push({ id: event.getId(), body: event.getContent().body, msgtype: event.getContent().msgtype });
    });

    await step("start both clients (initialSyncLimit 10) until PREPARED", async () => {
        for (const c of [a, b]) {
            const prepared = waitFor(
                c,
                ClientEvent.Sync,
                () => c.getSyncState() === SyncState.Prepared || c.getSyncState() === SyncState.Syncing,
                STEP_TIMEOUT_MS - 2000,
                `initial sync of ${c.getUserId()}`,
            );
            const errors = [];
            c.on(ClientEvent.Sync, (state, prev, data) => {
                if (state === SyncState.Error) errors.push(describeError(data?.error));
            });
            await c.startClient({ initialSyncLimit: 10 });
            await prepared.catch((e) => {
                throw new CompatFailure(`${e.message}${errors.length ? `; sync errors: ${errors.join("; ")}` : ""}`);
            });
        }
        const room = b.getRoom(roomId);
        check(!!room, "B's client has no Room object after the initial sync");
        check(room.getMyMembership() === "join", `B's membership is ${room.getMyMembership()}`);
        check(room.name === roomName, `room name on B is ${JSON.stringify(room.name)}, expected ${JSON.stringify(roomName)}`);
        const topic = room.currentState.getStateEvents("m.room.topic", "")?.getContent()?.topic;
        check(topic === roomTopic, `room topic on B is ${JSON.stringify(topic)}`);
        check(!!a.getRoom(roomId), "A's client has no Room object after the initial sync");
    });

    const bodies = [1, 2, 3].map((i) => `hello ${i} from js ${suffix}`);
    const sent = [];
    await step("A sends 3 messages (sendTextMessage / sendEvent with txn id)", async () => {
        let r = await call("sendTextMessage", a.sendTextMessage(roomId, bodies[0]));
        sent.push(r.event_id);
        r = await call(
            "sendEvent",
            a.sendEvent(roomId, "m.room.message", { msgtype: "m.text", body: bodies[1] }, `jstxn-${suffix}-2`),
        );
        sent.push(r.event_id);
        r = await call("sendTextMessage with txn id", a.sendTextMessage(roomId, bodies[2], `jstxn-${suffix}-3`));
        sent.push(r.event_id);
        check(
            sent.every((id) => typeof id === "string" && id.startsWith("$")),
            `odd event ids ${safeJson(sent)}`,
        );
        check(new Set(sent).size === 3, `event ids not distinct ${safeJson(sent)}`);
    });

    await step("re-PUT of a used txn id returns the same event_id", async () => {
        // Raw request through the SDK's HTTP layer: the SDK itself never reuses a txn id.
        const path = `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${encodeURIComponent(`jstxn-${suffix}-2`)}`;
        const r = await call(
            "PUT send with used txn id",
            a.http.authedRequest(sdk.Method.Put, path, undefined, { msgtype: "m.text", body: bodies[1] }),
        );
        check(r.event_id === sent[1], `same txn id gave ${r.event_id}, first was ${sent[1]}`);
    });

    await step("B receives them via Room.timeline, in order, exactly once", async () => {
        const mine = () => received.filter((e) => e.body?.includes(suffix));
        await waitFor(b, RoomEvent.Timeline, () => mine().length >= 3, 10_000, "waiting for 3 messages on B").catch(
            (e) => {
                throw new CompatFailure(`${e.message}; B got ${safeJson(mine())}`);
            },
        );
        // give a duplicate the chance to show up
        await new Promise((r) => setTimeout(r, 700));
        const ids = mine().map((e) => e.id);
        check(safeJson(ids) === safeJson(sent), `B saw ${safeJson(ids)}, expected exactly ${safeJson(sent)}`);
        check(safeJson(mine().map((e) => e.body)) === safeJson(bodies), "bodies differ on B");
    });

    await step("B paginates /messages backwards", async () => {
        const res = await call("GET /messages dir=b", b.createMessagesRequest(roomId, null, 30, sdk.Direction.Backward));
        const ours = (res.chunk || []).filter((e) => e.type === "m.room.message" && e.content?.body?.includes(suffix));
        check(
            safeJson(ours.map((e) => e.event_id)) === safeJson([...sent].reverse()),
            () => `/messages dir=b gave ${safeJson(ours.map((e) => e.event_id))}, expected ${safeJson([...sent].reverse())}`,
        );
        return `${res.chunk.length} events`;
    });

    const png = makePng();
    let mxc;
    await step("A uploads content with uploadContent and posts an m.image", async () => {
        const res = await call("uploadContent", a.uploadContent(png, { name: "compat.png", type: "image/png" }));
        check(typeof res.content_uri === "string" && res.content_uri.startsWith("mxc://"), `odd content_uri ${safeJson(res)}`);
        mxc = res.content_uri;
        await call(
            "send m.image",
            a.sendEvent(roomId, "m.room.message", {
                msgtype: "m.image",
                body: "compat.png",
                url: mxc,
                info: { mimetype: "image/png", size: png.length, w: 3, h: 2 },
            }),
        );
        await waitFor(b, RoomEvent.Timeline, () => received.some((e) => e.msgtype === "m.image"), 10_000, "B waiting for m.image");
        const img = received.find((e) => e.msgtype === "m.image");
        check(!!img, "B did not receive the m.image event");
        return `${mxc}, ${png.length} bytes`;
    });

    await step("B downloads it via /_matrix/client/v1/media/download with its token", async () => {
        const m = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc);
        check(!!m, `cannot parse ${mxc}`);
        const url = `${baseUrl}/_matrix/client/v1/media/download/${encodeURIComponent(m[1])}/${encodeURIComponent(m[2])}`;
        // the SDK builds the same URL for authenticated media
        const sdkUrl = b.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
        check(
            !!sdkUrl && new URL(sdkUrl).pathname === new URL(url).pathname,
            `mxcUrlToHttp(useAuthentication) gave ${sdkUrl}, expected path ${new URL(url).pathname}`,
        );
        const resp = await call(
            "GET media download",
            fetch(url, {
                headers: { Authorization: `Bearer ${b.getAccessToken()}` },
                signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
            }),
        );
        if (resp.status !== 200) {
            const text = await resp.text().catch(() => "");
            check(false, `download: HTTP ${resp.status} ${text.slice(0, 200)}`);
        }
        const bytes = Buffer.from(await resp.arrayBuffer());
        check(bytes.equals(png), `downloaded ${bytes.length} bytes differ from the ${png.length} uploaded`);
        const ct = (resp.headers.get("content-type") || "").split(";")[0].trim();
        check(ct === "image/png", `download content-type ${JSON.stringify(ct)}`);

        const anonResp = await call(
            "GET media download without token",
            fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }),
        );
        const body = await anonResp.json().catch(() => ({}));
        check(
            anonResp.status === 401 && body.errcode === "M_MISSING_TOKEN",
            `download without token: expected 401 M_MISSING_TOKEN, got ${anonResp.status} ${safeJson(body)}`,
        );
        return `${bytes.length} bytes, ${ct}`;
    });

    await step("A sets a display name, B reads it (profile)", async () => {
        const name = `JS Alice ${suffix}`;
        await call("setDisplayName", a.setDisplayName(name));
        const p = await call("getProfileInfo", b.getProfileInfo(regA.user_id));
        check(p.displayname === name, `B sees displayname ${JSON.stringify(p.displayname)}, expected ${JSON.stringify(name)}`);
    });

    await step("logout A and B (stopping clients); old tokens -> M_UNKNOWN_TOKEN", async () => {
        const old = [
            [regA.user_id, a.getAccessToken()],
            [regB.user_id, b.getAccessToken()],
        ];
        await call("logout A", a.logout(true));
        await call("logout B", b.logout(true));
        for (const [userId, token] of old) {
            const c = newClient(baseUrl, { userId, accessToken: token });
            await expectError(`whoami with ${userId}'s old token`, c.whoami(), "M_UNKNOWN_TOKEN", 401);
        }
    });
}

// --- main -----------------------------------------------------------------------
function stopAll() {
    for (const c of clients) {
        try {
            c.stopClient();
        } catch {
            /* ignore */
        }
    }
}

function fail(msg) {
    err(`js-sdk compat: FAIL at step ${stepNo} '${stepName}': ${msg}`);
    if (sdkLog.length) {
        err("  last matrix-js-sdk log lines:");
        for (const l of sdkLog.slice(-8)) err(`    ${l}`);
    }
    stopAll();
    process.exit(1);
}

const baseArg = process.argv[2];
if (process.argv.length !== 3 || !/^https?:\/\//.test(baseArg || "")) {
    err("usage: node smoke.mjs BASE_URL   (e.g. http://127.0.0.1:8008)");
    process.exit(2);
}
const baseUrl = baseArg.replace(/\/+$/, "");
const sdkVersion = JSON.parse(
    readFileSync(new URL("./node_modules/matrix-js-sdk/package.json", import.meta.url), "utf8"),
).version;
out(`[js] matrix-js-sdk ${sdkVersion} on Node ${process.version} against ${baseUrl}`);

const hardTimer = setTimeout(() => fail(`timed out after ${TOTAL_TIMEOUT_MS / 1000} s`), TOTAL_TIMEOUT_MS);
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${describeError(e)}`));

try {
    await run(baseUrl);
} catch (e) {
    fail(e instanceof CompatFailure ? e.message : `${e?.name || "Error"}: ${describeError(e)}`);
}
clearTimeout(hardTimer);
stopAll();
out(`js-sdk compat: OK (${checks} checks)`);
process.exit(0);
