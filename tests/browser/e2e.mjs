// Browser end-to-end test: a real Matrix web client (Hydrogen, from the npm
// package hydrogen-view-sdk) running in headless Chromium talks to the
// homeserver under test, while a second user is driven from node over the
// Client-Server HTTP API.
//
//   node e2e.mjs BASE_URL [OUT_DIR]
//
// Flow:
//   1. node registers users A and B (m.login.dummy)
//   2. browser: A logs in through Hydrogen's login screen
//   3. browser: A creates an unencrypted private room via "Create room"
//   4. browser: A invites B via Room details -> People -> Invite
//   5. node: B sees the invite in /sync, joins, sends a message
//   6. browser: the message appears in Hydrogen's timeline (DOM assertion)
//   7. browser: A picks "Reply" on B's message, types into the composer and
//      presses Enter
//   8. node: B receives the reply (with m.in_reply_to) via /sync
//   9. screenshot of the room view -> OUT_DIR/browser-e2e.png
//
// Environment:
//   CHROMIUM=/usr/bin/chromium   browser executable
//   E2E_DEADLINE_MS=110000        overall deadline enforced inside the script
//   E2E_OLM=1                     let Hydrogen load libolm (E2EE support:
//                                 device key upload etc.); off by default
//   E2E_HEADFUL=1                 run with a visible window (needs a display)
//
//   node e2e.mjs --serve [PORT]  only serve the Hydrogen page (for debugging:
//                                 open http://127.0.0.1:PORT/?hs=BASE_URL)

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_MODULES = path.join(HERE, "node_modules");
const T0 = Date.now();

// ---------------------------------------------------------------- arguments

const SERVE_ONLY = process.argv[2] === "--serve";
const BASE_URL = (process.argv[2] || process.env.BASE_URL || "").replace(/\/+$/, "");
const OUT_DIR = path.resolve((!SERVE_ONLY && process.argv[3]) || path.join(HERE, "out"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const DEADLINE_MS = Number(process.env.E2E_DEADLINE_MS || 110000);
const WITH_OLM = process.env.E2E_OLM === "1";

if (!SERVE_ONLY && (!BASE_URL || !/^https?:\/\//.test(BASE_URL))) {
    console.error("usage: node e2e.mjs BASE_URL [OUT_DIR]   (BASE_URL like http://127.0.0.1:8008)");
    process.exit(2);
}
const SCREENSHOT = path.join(OUT_DIR, "browser-e2e.png");
const FAIL_SCREENSHOT = path.join(OUT_DIR, "browser-e2e-failure.png");
const CONSOLE_LOG = path.join(OUT_DIR, "browser-console.log");
const REQUEST_LOG = path.join(OUT_DIR, "browser-requests.log");
if (!SERVE_ONLY) {
    fs.mkdirSync(OUT_DIR, { recursive: true });
    for (const f of [SCREENSHOT, FAIL_SCREENSHOT]) fs.rmSync(f, { force: true });
}

function elapsed() {
    return ((Date.now() - T0) / 1000).toFixed(1).padStart(5) + "s";
}
function log(msg) {
    console.log(`[${elapsed()}] ${msg}`);
}
let currentStep = "start";
function step(name) {
    currentStep = name;
    log(`step: ${name}`);
}

class E2EError extends Error {}
function fail(msg) {
    throw new E2EError(msg);
}

// ----------------------------------------------------------- Matrix client

async function matrix(method, urlPath, { token, body, query, timeoutMs = 15000 } = {}) {
    const url = new URL(BASE_URL + urlPath);
    for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, String(v));
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
        res = await fetch(url, {
            method,
            headers,
            body: body === undefined ? undefined : JSON.stringify(body),
            signal: AbortSignal.timeout(timeoutMs),
        });
    } catch (err) {
        fail(`${method} ${urlPath}: request failed: ${err.cause?.message || err.message}`);
    }
    const text = await res.text();
    let json;
    try {
        json = text ? JSON.parse(text) : {};
    } catch {
        json = { _raw: text.slice(0, 300) };
    }
    return { status: res.status, json };
}

function expectOk(what, r) {
    if (r.status < 200 || r.status >= 300) {
        fail(`${what}: HTTP ${r.status} ${JSON.stringify(r.json).slice(0, 400)}`);
    }
    return r.json;
}

async function register(localpart, password) {
    const body = { username: localpart, password, auth: { type: "m.login.dummy" }, initial_device_display_name: "e2e-node" };
    let r = await matrix("POST", "/_matrix/client/v3/register", { body });
    if (r.status === 401 && r.json.session) {
        // server wants the user-interactive auth session echoed back
        r = await matrix("POST", "/_matrix/client/v3/register", {
            body: { ...body, auth: { type: "m.login.dummy", session: r.json.session } },
        });
    }
    const j = expectOk(`register ${localpart}`, r);
    if (!j.user_id || !j.access_token) fail(`register ${localpart}: response lacks user_id/access_token: ${JSON.stringify(j)}`);
    return { userId: j.user_id, token: j.access_token, localpart, password };
}

// Long-poll /sync for user `u` until `pred(syncResponse)` returns a truthy
// value; keeps u.since up to date so later waits only see new events.
async function syncUntil(u, what, pred, timeoutMs) {
    const until = Date.now() + timeoutMs;
    let rounds = 0;
    while (Date.now() < until) {
        rounds++;
        const query = { timeout: Math.min(5000, Math.max(0, until - Date.now())) };
        if (u.since) query.since = u.since;
        const r = await matrix("GET", "/_matrix/client/v3/sync", { token: u.token, query, timeoutMs: 20000 });
        const j = expectOk(`${u.localpart} /sync`, r);
        if (!j.next_batch) fail(`${u.localpart} /sync: no next_batch in response`);
        u.since = j.next_batch;
        const found = pred(j);
        if (found) return found;
    }
    fail(`timed out after ${timeoutMs} ms (${rounds} /sync rounds) waiting for ${what}`);
}

// ------------------------------------------------------------- web server

// hydrogen-view-sdk's ES build imports a few npm packages by bare name; some
// are CommonJS. Serve them as ES modules by wrapping them in a module scope.
function cjsAsEsm(file, namedExports = []) {
    const src = fs.readFileSync(path.join(NODE_MODULES, file), "utf8");
    return [
        "const module = { exports: {} };",
        "(function (module, exports) {",
        src,
        "\n}).call(globalThis, module, module.exports);",
        "export default module.exports;",
        ...namedExports.map((n) => `export const ${n} = module.exports.${n};`),
        "",
    ].join("\n");
}

const SHIMS = {
    "/shim/another-json.js": () => cjsAsEsm("another-json/another-json.js", ["stringify"]),
    "/shim/base64-arraybuffer.js": () => cjsAsEsm("base64-arraybuffer/lib/base64-arraybuffer.js", ["encode", "decode"]),
    "/shim/off-color.js": () => cjsAsEsm("off-color/umd/index.js", ["offColor"]),
    // olm is loaded by Hydrogen with a <script> tag when enabled (see app.js)
    "/shim/empty.js": () => "export {};\n",
};

// URL prefix -> directory
const STATIC_DIRS = [
    ["/hydrogen/assets/", path.join(NODE_MODULES, "hydrogen-view-sdk/asset-build/assets")],
    ["/hydrogen/", path.join(NODE_MODULES, "hydrogen-view-sdk/lib-build")],
    ["/vendor/dompurify/", path.join(NODE_MODULES, "dompurify/dist")],
    ["/olm/", path.join(NODE_MODULES, "@matrix-org/olm")],
    ["/", path.join(HERE, "page")],
];

const MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".map": "application/json",
};

function startStaticServer(port = 0) {
    const server = http.createServer((req, res) => {
        const send = (status, type, body) => {
            res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
            res.end(body);
        };
        let pathname;
        try {
            pathname = decodeURIComponent(new URL(req.url, "http://x").pathname);
        } catch {
            return send(400, "text/plain", "bad url");
        }
        if (req.method !== "GET" && req.method !== "HEAD") return send(405, "text/plain", "method not allowed");
        if (pathname === "/") pathname = "/index.html";
        if (pathname === "/sw.js") pathname = "/hydrogen/sw.js";
        if (pathname === "/favicon.ico") return send(204, "text/plain", "");
        if (SHIMS[pathname]) return send(200, MIME[".js"], SHIMS[pathname]());
        for (const [prefix, dir] of STATIC_DIRS) {
            if (!pathname.startsWith(prefix)) continue;
            const file = path.resolve(dir, "." + pathname.slice(prefix.length - 1));
            if (!file.startsWith(dir + path.sep)) return send(403, "text/plain", "forbidden");
            fs.readFile(file, (err, data) => {
                if (err) return send(404, "text/plain", "not found");
                send(200, MIME[path.extname(file)] || "application/octet-stream", data);
            });
            return;
        }
        send(404, "text/plain", "not found");
    });
    return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, "127.0.0.1", () => resolve(server));
    });
}

// ------------------------------------------------------------------- test

let context, page, server, userDataDir;
const consoleLines = [];
const requestLines = []; // the browser's requests to the homeserver

let cleanupPromise;
function cleanup() {
    cleanupPromise ??= doCleanup();
    return cleanupPromise;
}
async function doCleanup() {
    try { if (context) await context.close(); } catch {}
    try { if (server) server.close(); } catch {}
    try { if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true }); } catch {}
    try { fs.writeFileSync(CONSOLE_LOG, consoleLines.join("\n") + "\n"); } catch {}
    try { fs.writeFileSync(REQUEST_LOG, requestLines.join("\n") + "\n"); } catch {}
}

async function main() {
    const nonce = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4).toString(36)}`;
    const password = `pw-${nonce}-Secret!`;
    const roomName = `e2e room ${nonce}`;
    const bMessage = `Hello from B over the HTTP API (${nonce})`;
    const aReply = `Reply from A typed into Hydrogen (${nonce})`;

    log(`homeserver: ${BASE_URL}`);
    log(`output dir: ${OUT_DIR}`);

    step("homeserver reachable (/_matrix/client/versions)");
    const versions = expectOk("GET /_matrix/client/versions", await matrix("GET", "/_matrix/client/versions"));
    log(`  versions: ${(versions.versions || []).join(", ")}`);

    step("register users A and B (m.login.dummy)");
    const A = await register(`e2ea_${nonce}`, password);
    const B = await register(`e2eb_${nonce}`, password);
    log(`  A = ${A.userId}, B = ${B.userId}`);
    // prime B's sync token
    await syncUntil(B, "B initial sync", () => true, 15000);

    step("start static web server and Chromium");
    server = await startStaticServer();
    const pageOrigin = `http://127.0.0.1:${server.address().port}`;
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "haetae-e2e-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: process.env.E2E_HEADFUL !== "1",
        args: [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
        viewport: { width: 1280, height: 800 },
        timeout: 30000,
    });
    log(`  chromium ${context.browser()?.version?.() ?? ""} (${CHROMIUM}), page server ${pageOrigin}`);
    page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(20000);
    page.on("console", (m) => consoleLines.push(`[${elapsed()}] console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => consoleLines.push(`[${elapsed()}] pageerror: ${e.stack || e.message}`));
    page.on("requestfailed", (r) => consoleLines.push(`[${elapsed()}] requestfailed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
    const hsPrefix = BASE_URL + "/";
    context.on("requestfinished", async (req) => {
        if (!req.url().startsWith(hsPrefix) || req.method() === "OPTIONS") return;
        const res = await req.response().catch(() => null);
        // GETs go through Hydrogen's service worker: log the worker's network
        // request, not the page's copy that the worker answered
        if (res && res.fromServiceWorker()) return;
        requestLines.push(`[${elapsed()}] ${req.method()} ${req.url().slice(BASE_URL.length)} -> ${res ? res.status() : "?"}`);
    });
    context.on("requestfailed", (req) => {
        if (!req.url().startsWith(hsPrefix)) return;
        requestLines.push(`[${elapsed()}] ${req.method()} ${req.url().slice(BASE_URL.length)} -> FAILED ${req.failure()?.errorText}`);
    });
    page.on("response", (r) => {
        if (r.status() >= 400) consoleLines.push(`[${elapsed()}] http ${r.status()}: ${r.request().method()} ${r.url()}`);
    });

    step("open Hydrogen and wait for the login form");
    const appUrl = `${pageOrigin}/?hs=${encodeURIComponent(BASE_URL)}${WITH_OLM ? "&olm=1" : ""}`;
    await page.goto(appUrl, { waitUntil: "load" });
    await waitForUi(page.locator("#username"), "Hydrogen's password login form (needs GET /_matrix/client/r0/login with m.login.password)");

    step(`A logs in through the UI as ${A.localpart}`);
    await page.locator("#username").fill(A.localpart);
    await page.locator("#password").fill(A.password);
    await page.locator(".PasswordLoginView button[type=submit]").click();
    await waitForUi(page.locator(".SessionView .LeftPanel"), "the session view after login and initial sync", 40000);
    log(`  logged in; url ${shortUrl(page.url())}`);

    step(`A creates room "${roomName}" through "Create room"`);
    await page.locator(".LeftPanel button.create").click();
    await page.locator(".menu").getByText("Create Room", { exact: true }).click();
    await waitForUi(page.locator(".CreateRoomView #name"), "the create-room form");
    await page.locator(".CreateRoomView #name").fill(roomName);
    await page.locator(".CreateRoomView #isPrivate").check();
    // unencrypted: the test exercises the plain Client-Server API
    await page.locator(".CreateRoomView #isEncrypted").uncheck();
    await page.locator(".CreateRoomView button[type=submit]").click();
    // hydrogen-view-sdk 0.3.1's CreateRoomViewModel.create() does not await
    // the (async) Session.createRoom(), so it navigates to "#/.../room/"
    // with an empty id instead of the new room. Open the room from the room
    // list instead, as a person would.
    const roomTile = page.locator(".LeftPanel .RoomList li", { hasText: roomName });
    await waitForUi(roomTile, `the new room "${roomName}" in the room list (needs POST /createRoom and /sync)`);
    await roomTile.first().click();
    const roomId = await waitForRoomId(page);
    log(`  room created: ${roomId}`);
    await waitForUi(page.locator(".RoomView .MessageComposer textarea"), "the room view with its composer");
    await waitForUi(page.locator(".RoomView .RoomHeader h2", { hasText: roomName }), "the room name in the room header");

    step(`A invites B (${B.userId}) via Room details -> People -> Invite`);
    await page.locator(".RoomView .RoomHeader button.room-options").click();
    await page.locator(".menu").getByText("Room details", { exact: true }).click();
    await page.locator(".RoomDetailsView button.RoomDetailsView_row", { hasText: "People" }).click();
    await page.locator(".MemberListView__invite-btn").click();
    await page.locator(".InvitePanelView__input").fill(B.userId);
    await page.locator(".InvitePanelView__btn").click();

    step("B receives the invite via /sync and joins");
    await syncUntil(B, `an invite to ${roomId} in B's /sync (rooms.invite)`, (s) => s.rooms?.invite?.[roomId], 20000);
    expectOk(`B POST /join/${roomId}`, await matrix("POST", `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, { token: B.token, body: {} }));
    log("  B joined");

    step("B sends a message via PUT /rooms/{roomId}/send");
    const sent = expectOk(
        "B send message",
        await matrix("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/txn-${nonce}`, {
            token: B.token,
            body: { msgtype: "m.text", body: bMessage },
        }),
    );
    log(`  event ${sent.event_id}`);

    step("the browser shows B's message in the room timeline");
    // make sure the room (not the right panel) is what we are looking at
    await page.evaluate((rid) => {
        const m = location.hash.match(/^#\/session\/[^/]+/);
        if (m) location.hash = `${m[0]}/room/${rid}`;
    }, roomId);
    const bTile = page.locator(`.RoomView .Timeline .Timeline_message[data-event-id="${sent.event_id}"]`, { hasText: bMessage });
    await waitForUi(bTile, `B's message "${bMessage}" (${sent.event_id}) in Hydrogen's timeline`, 30000);
    log("  found in DOM: " + JSON.stringify((await bTile.first().innerText()).replace(/\s+/g, " ").trim()));

    step("A replies to B's message through Hydrogen's message menu and composer");
    await bTile.first().hover();
    await bTile.first().locator(".Timeline_messageOptions").click();
    await page.locator(".menu").getByText("Reply", { exact: true }).click();
    await waitForUi(page.locator(".MessageComposer_replyPreview", { hasText: bMessage }), "the composer's reply preview quoting B's message");
    const composer = page.locator(".RoomView .MessageComposer textarea");
    await composer.click();
    await composer.fill(aReply);
    await composer.press("Enter");
    const aTile = page.locator(".RoomView .Timeline .Timeline_message.own:not(.unsent)", { hasText: aReply });
    await waitForUi(aTile, `A's reply to be shown as sent (not pending) in the timeline`, 30000);
    log("  shown as sent: " + JSON.stringify((await aTile.first().innerText()).replace(/\s+/g, " ").trim()));

    step("B receives A's reply via /sync");
    const got = await syncUntil(
        B,
        `A's reply "${aReply}" in B's /sync for ${roomId}`,
        (s) =>
            (s.rooms?.join?.[roomId]?.timeline?.events || []).find(
                (e) => e.type === "m.room.message" && e.sender === A.userId && String(e.content?.body || "").endsWith(aReply),
            ),
        30000,
    );
    log(`  B got ${got.event_id} from ${got.sender}: ${JSON.stringify(got.content.body)}`);
    const inReplyTo = got.content?.["m.relates_to"]?.["m.in_reply_to"]?.event_id;
    if (inReplyTo !== sent.event_id) {
        fail(`A's reply should carry m.relates_to.m.in_reply_to.event_id = ${sent.event_id}, got ${JSON.stringify(got.content?.["m.relates_to"])}`);
    }
    log(`  m.in_reply_to = ${inReplyTo} (B's message)`);

    step("screenshot of the room view");
    await page.mouse.move(5, 5); // no hover effects on the tiles
    await page.waitForTimeout(500);
    await page.screenshot({ path: SCREENSHOT });
    log(`  wrote ${SCREENSHOT}`);
}

function shortUrl(u) {
    return u.replace(/^https?:\/\/[^/]+/, "");
}

// Error texts Hydrogen puts on screen (login errors, session load failure,
// room/invite errors); waiting for UI stops early when one shows up.
const HYDROGEN_ERRORS = ".error, .ErrorView_message, .SessionLoadStatusView .status:has(button)";

async function waitForUi(locator, what, timeout = 20000) {
    const outcome = await Promise.race([
        locator.first().waitFor({ state: "visible", timeout }).then(() => "ok"),
        page.locator(HYDROGEN_ERRORS).first().waitFor({ state: "visible", timeout: timeout + 5000 }).then(() => "error"),
    ]).catch(() => "timeout");
    if (outcome === "ok") return;
    const hint = await pageHint();
    if (outcome === "error") fail(`Hydrogen showed an error while waiting for ${what}${hint}`);
    fail(`timed out after ${timeout} ms waiting for ${what}${hint}`);
}

async function waitForRoomId(page) {
    try {
        const handle = await page.waitForFunction(
            () => {
                const m = decodeURIComponent(location.hash).match(/\/room\/(![^/]+)/);
                return m ? m[1] : null;
            },
            null,
            { timeout: 20000, polling: 100 },
        );
        return await handle.jsonValue();
    } catch {
        fail(`room creation did not finish (no !roomId in the URL) within 20 s${await pageHint()}`);
    }
}

// Visible error texts from Hydrogen's UI, to explain a timeout.
async function pageHint() {
    if (!page) return "";
    try {
        const info = await page.evaluate(() => {
            const errs = [...document.querySelectorAll(".error, .ErrorView_message, .SessionLoadStatusView .status")]
                .map((e) => e.innerText.trim())
                .filter(Boolean);
            return { hash: location.hash, errs, state: window.__e2e };
        });
        let s = `\n  page url hash: ${info.hash || "(none)"}`;
        if (info.state) s += `\n  app state: ${JSON.stringify(info.state).slice(0, 500)}`;
        if (info.errs.length) s += `\n  errors shown by Hydrogen: ${info.errs.join(" | ").slice(0, 800)}`;
        const http = consoleLines.filter((l) => / http \d|requestfailed|pageerror|console.error/.test(l)).slice(-8);
        if (http.length) s += `\n  recent browser errors:\n    ${http.join("\n    ").slice(0, 2000)}`;
        return s;
    } catch {
        return "";
    }
}

if (SERVE_ONLY) {
    const s = await startStaticServer(Number(process.argv[3] || 0));
    console.log(`serving the Hydrogen page on http://127.0.0.1:${s.address().port}/?hs=BASE_URL`);
    await new Promise(() => {});
}

// Only the first of "deadline hit" / "main() finished" reports and exits.
let finished = false;

const deadline = setTimeout(async () => {
    if (finished) return;
    finished = true;
    console.error(`browser e2e: FAILED: overall deadline of ${DEADLINE_MS} ms exceeded during step "${currentStep}"`);
    try {
        if (page) {
            await page.screenshot({ path: FAIL_SCREENSHOT, timeout: 3000 });
            console.error(`  failure screenshot: ${FAIL_SCREENSHOT}`);
        }
    } catch {}
    await cleanup();
    console.error(`  browser console log: ${CONSOLE_LOG}`);
    process.exit(1);
}, DEADLINE_MS);

try {
    await main();
    if (finished) await new Promise(() => {});
    finished = true;
    clearTimeout(deadline);
    await cleanup();
    console.log(`browser e2e: OK (screenshot: ${SCREENSHOT})`);
    process.exit(0);
} catch (err) {
    if (finished) await new Promise(() => {}); // the deadline handler exits
    finished = true;
    clearTimeout(deadline);
    const reason = err instanceof E2EError ? err.message : (err.stack || String(err)) + (await pageHint());
    console.error(`browser e2e: FAILED in step "${currentStep}": ${reason}`);
    try {
        if (page) {
            await page.screenshot({ path: FAIL_SCREENSHOT, timeout: 5000 });
            console.error(`  failure screenshot: ${FAIL_SCREENSHOT}`);
        }
    } catch {}
    await cleanup();
    console.error(`  browser console log: ${CONSOLE_LOG}`);
    process.exit(1);
}
