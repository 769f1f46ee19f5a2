#!/usr/bin/env node
// A Matrix client logging in with the OAuth 2.0 API, driven by matrix-js-sdk's own OIDC support.
//
//   node oauth_login.mjs BASE_URL        e.g. node oauth_login.mjs http://127.0.0.1:8008
//
// The SDK does the client's whole side of the protocol, as Element Web does: auth metadata
// discovery (`getAuthMetadata`, which also fetches the JWKS), dynamic client registration
// (`registerOidcClient`, a web client), the authorization URL with its state, nonce and PKCE S256
// verifier (`generateOidcAuthorizationUrl`, through oidc-client-ts), the code exchange with
// validation of the token response and the id_token claims (`completeAuthorizationCodeGrant`),
// and the refresh (`OidcTokenRefresher`). The one part a browser would do — the person signing
// in on the homeserver's login page and allowing access — is done here with plain HTTP: the
// login form with its CSRF token and cookie, then the consent form; the code and state are read
// from the redirect to the registered redirect URI, which is never fetched.
//
// With the access token the SDK obtained: a MatrixClient syncs (PREPARED), creates a room, sends
// a message and sees it arrive through /sync; after a refresh a client resumed from the new
// tokens syncs and sends again; logout ends the session.
//
// Needs open registration with the m.login.dummy stage (the account is made with
// POST /_matrix/client/v3/register). Prints one line per step, then
// "js-sdk oauth compat: OK (N checks)". On the first failure prints
// "js-sdk oauth compat: FAIL ..." and exits 1. Hard limit 55 s.
// Set COMPAT_VERBOSE=1 to see the SDK's own log output.

import { readFileSync } from "node:fs";

// --- Node support -------------------------------------------------------------------
// Newer matrix-js-sdk releases call Promise.withResolvers (Node >= 22); see smoke.mjs.
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

// The SDK's OIDC helpers (and oidc-client-ts under them) keep the pending sign-in in
// `window.sessionStorage` and rebuild the callback URL from `window.location.origin`: the
// browser globals they touch, and nothing else. The origin is the registered client's.
const CLIENT_URI = "https://js-compat.example.org/";
const REDIRECT_URI = "https://js-compat.example.org/oauth/callback";

class MemoryStorage {
    #items = new Map();
    get length() {
        return this.#items.size;
    }
    key(index) {
        return [...this.#items.keys()][index] ?? null;
    }
    getItem(key) {
        return this.#items.has(key) ? this.#items.get(key) : null;
    }
    setItem(key, value) {
        this.#items.set(String(key), String(value));
    }
    removeItem(key) {
        this.#items.delete(key);
    }
    clear() {
        this.#items.clear();
    }
}

const clientOrigin = new URL(CLIENT_URI).origin;
globalThis.window = {
    sessionStorage: new MemoryStorage(),
    localStorage: new MemoryStorage(),
    location: { origin: clientOrigin, href: CLIENT_URI },
    crypto: globalThis.crypto,
};

const TOTAL_TIMEOUT_MS = 55_000;
const STEP_TIMEOUT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 15_000;
const VERBOSE = process.env.COMPAT_VERBOSE === "1";

// --- SDK log capture (as in smoke.mjs) --------------------------------------------------
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
const { secureRandomString } = await import("matrix-js-sdk/lib/randomstring.js");
const {
    ClientEvent,
    RoomEvent,
    SyncState,
    Preset,
    Visibility,
    registerOidcClient,
    generateOidcAuthorizationUrl,
    completeAuthorizationCodeGrant,
    OidcTokenRefresher,
} = sdk;

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
    out(`[js-oauth] ${String(stepNo).padStart(2, "0")} ${name}${extra} ... ok [${Date.now() - t0} ms]`);
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

// --- the person's browser: plain HTTP with a cookie jar, no redirect followed ----------
class Browser {
    #cookies = new Map();

    async request(method, url, form) {
        const headers = {};
        if (this.#cookies.size) headers.Cookie = [...this.#cookies].map(([k, v]) => `${k}=${v}`).join("; ");
        let body;
        if (form) {
            headers["Content-Type"] = "application/x-www-form-urlencoded";
            body = new URLSearchParams(form).toString();
        }
        const resp = await fetch(url, {
            method,
            headers,
            body,
            redirect: "manual",
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        for (const line of resp.headers.getSetCookie()) {
            const [pair, ...attrs] = line.split(";");
            const eq = pair.indexOf("=");
            const name = pair.slice(0, eq).trim();
            const value = pair.slice(eq + 1).trim();
            const expired = attrs.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a));
            if (expired || value === "") this.#cookies.delete(name);
            else this.#cookies.set(name, value);
        }
        const text = await resp.text();
        return { status: resp.status, location: resp.headers.get("location"), text };
    }
}

function unescapeHtml(s) {
    return s
        .replace(/&quot;/g, '"')
        .replace(/&#39;/g, "'")
        .replace(/&lt;/g, "<")
        .replace(/&gt;/g, ">")
        .replace(/&amp;/g, "&");
}

/** The named input values of the page's form posting to `action` (a browser would submit these). */
function formFields(page, action) {
    for (const m of page.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/g)) {
        const act = /\baction="([^"]*)"/.exec(m[1]);
        if (!act || unescapeHtml(act[1]) !== action) continue;
        const fields = {};
        for (const input of m[2].matchAll(/<input\b([^>]*)>/g)) {
            const name = /\bname="([^"]*)"/.exec(input[1]);
            const value = /\bvalue="([^"]*)"/.exec(input[1]);
            if (name) fields[unescapeHtml(name[1])] = value ? unescapeHtml(value[1]) : "";
        }
        return fields;
    }
    throw new CompatFailure(`no form posting to ${action} in the page: ${page.slice(0, 300)}`);
}

// --- the flow -----------------------------------------------------------------------
async function run(baseUrl) {
    const suffix = Math.random().toString(16).slice(2, 10);
    const username = `jsoauth_${suffix}`;
    const password = `compat-${suffix}-${Math.random().toString(36).slice(2)}`;
    const anon = newClient(baseUrl);

    let config;
    await step("getAuthMetadata (auth_metadata, validated, JWKS fetched)", async () => {
        config = await call("getAuthMetadata", anon.getAuthMetadata());
        check(typeof config.issuer === "string" && config.issuer.startsWith("http"), `odd issuer ${config.issuer}`);
        check(!!config.registration_endpoint, "metadata has no registration_endpoint");
        check(
            Array.isArray(config.signingKeys) && config.signingKeys.length > 0,
            () => `no signing keys from jwks_uri ${config.jwks_uri}: ${safeJson(config.signingKeys)}`,
        );
        return `issuer ${config.issuer}, ${config.signingKeys.length} signing key(s)`;
    });

    let clientId;
    await step("registerOidcClient (dynamic registration, web client)", async () => {
        clientId = await call(
            "registerOidcClient",
            registerOidcClient(config, {
                clientName: "matrix-js-sdk compat",
                clientUri: CLIENT_URI,
                applicationType: "web",
                redirectUris: [REDIRECT_URI],
                contacts: ["compat@js-compat.example.org"],
                tosUri: `${CLIENT_URI}tos`,
                policyUri: `${CLIENT_URI}privacy`,
            }),
        );
        check(typeof clientId === "string" && clientId.length > 0, `odd client_id ${safeJson(clientId)}`);
        return clientId;
    });

    await step("register the account (POST /register, m.login.dummy)", async () => {
        const post = (body) =>
            fetch(`${baseUrl}/_matrix/client/v3/register`, {
                method: "POST",
                headers: { "Content-Type": "application/json" },
                body: JSON.stringify(body),
                signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
            });
        const body = { username, password, inhibit_login: true };
        const first = await call("register step 1", post(body));
        const firstBody = await first.json().catch(() => ({}));
        check(first.status === 401 && !!firstBody.session, () => `register step 1: ${first.status} ${safeJson(firstBody)}`);
        const done = await call("register", post({ ...body, auth: { type: "m.login.dummy", session: firstBody.session } }));
        const doneBody = await done.json().catch(() => ({}));
        check(done.status === 200 && !!doneBody.user_id, () => `register: ${done.status} ${safeJson(doneBody)}`);
        return doneBody.user_id;
    });

    let authUrl;
    let nonce;
    await step("generateOidcAuthorizationUrl (state, nonce, PKCE S256)", async () => {
        nonce = secureRandomString(10);
        authUrl = await call(
            "generateOidcAuthorizationUrl",
            generateOidcAuthorizationUrl({ metadata: config, clientId, homeserverUrl: baseUrl, redirectUri: REDIRECT_URI, nonce }),
        );
        const u = new URL(authUrl);
        check(
            `${u.origin}${u.pathname}` === config.authorization_endpoint,
            `authorization URL ${authUrl} is not at ${config.authorization_endpoint}`,
        );
        const p = u.searchParams;
        check(p.get("code_challenge_method") === "S256" && !!p.get("code_challenge"), `no S256 challenge in ${authUrl}`);
        check(!!p.get("state") && p.get("nonce") === nonce, `state/nonce missing in ${authUrl}`);
        check(/urn:matrix:org\.matrix\.msc2967\.client:device:\S+/.test(p.get("scope") || ""), `scope ${p.get("scope")}`);
        return `scope "${p.get("scope")}"`;
    });

    let code;
    let state;
    await step("the person signs in and allows access (login + consent forms over HTTP)", async () => {
        const browser = new Browser();
        const page = await call("GET authorization URL", browser.request("GET", authUrl));
        check(page.status === 200 && page.text.includes('action="/oauth2/login"'), () => `login page: HTTP ${page.status}`);
        const login = formFields(page.text, "/oauth2/login");
        const signedIn = await call(
            "POST /oauth2/login",
            browser.request("POST", `${baseUrl}/oauth2/login`, { ...login, username, password }),
        );
        check(
            signedIn.status === 303 && !!signedIn.location,
            () => `sign in: HTTP ${signedIn.status} ${signedIn.text.replace(/\s+/g, " ").slice(0, 300)}`,
        );
        const consent = await call("GET consent page", browser.request("GET", new URL(signedIn.location, baseUrl).href));
        check(consent.status === 200, () => `consent page: HTTP ${consent.status}`);
        const fields = formFields(consent.text, "/oauth2/authorize");
        const answer = await call(
            "POST /oauth2/authorize",
            browser.request("POST", `${baseUrl}/oauth2/authorize`, { ...fields, decision: "allow" }),
        );
        check(answer.status === 303 && !!answer.location, () => `consent: HTTP ${answer.status} ${answer.text.slice(0, 300)}`);
        const callback = new URL(answer.location);
        check(
            `${callback.origin}${callback.pathname}` === REDIRECT_URI,
            `redirected to ${answer.location}, not the registered ${REDIRECT_URI}`,
        );
        check(!callback.searchParams.get("error"), () => `authorization error: ${callback.search}`);
        code = callback.searchParams.get("code");
        state = callback.searchParams.get("state");
        check(!!code && !!state, `no code/state in ${answer.location}`);
        check(state === new URL(authUrl).searchParams.get("state"), "the state came back changed");
    });

    let grant;
    await step("completeAuthorizationCodeGrant (code exchange, id_token checks)", async () => {
        grant = await call("completeAuthorizationCodeGrant", completeAuthorizationCodeGrant(code, state));
        const t = grant.tokenResponse;
        check(t.token_type === "Bearer" && !!t.access_token, `token response ${safeJson(t)}`);
        check(!!t.refresh_token, "no refresh_token in the token response");
        check(grant.homeserverUrl === baseUrl, `homeserverUrl ${grant.homeserverUrl}`);
        check(grant.oidcClientSettings.clientId === clientId, `clientId ${grant.oidcClientSettings.clientId}`);
        check(grant.oidcClientSettings.issuer === config.issuer, `issuer ${grant.oidcClientSettings.issuer}`);
        // The SDK already checked iss, aud, nonce and exp; its profile drops the protocol claims.
        check(!!grant.idTokenClaims?.sub, `no sub in the id_token profile ${safeJson(grant.idTokenClaims)}`);
        const claims = sdk.decodeIdToken(t.id_token);
        check(claims.nonce === nonce, `id_token nonce ${claims.nonce}, sent ${nonce}`);
        return `sub ${grant.idTokenClaims.sub}, expires_at ${t.expires_at}`;
    });

    const scopeDevice = /urn:matrix:org\.matrix\.msc2967\.client:device:(\S+)/.exec(new URL(authUrl).searchParams.get("scope"))[1];
    let me;
    await step("whoami with the access token", async () => {
        const probe = newClient(baseUrl, { accessToken: grant.tokenResponse.access_token });
        me = await call("whoami", probe.whoami());
        check(me.user_id?.startsWith(`@${username}:`), `whoami says ${me.user_id}`);
        check(me.device_id === scopeDevice, `device ${me.device_id}, the scope asked for ${scopeDevice}`);
        return `${me.user_id} / ${me.device_id}`;
    });

    const refresher = new OidcTokenRefresher(config.issuer, clientId, REDIRECT_URI, me.device_id, grant.idTokenClaims);
    const persisted = [];
    refresher.persistTokens = async (tokens) => {
        persisted.push(tokens);
    };
    const client = newClient(baseUrl, {
        userId: me.user_id,
        deviceId: me.device_id,
        accessToken: grant.tokenResponse.access_token,
        refreshToken: grant.tokenResponse.refresh_token,
        tokenRefreshFunction: refresher.doRefreshAccessToken.bind(refresher),
    });

    const received = [];
    let roomId;
    const listen = (c) =>
        c.on(RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
            if (!room || room.roomId !== roomId || toStartOfTimeline || removed) return;
            if (data && data.liveEvent === false) return;
            if (event.getType() !== "m.room.message") return;
            received.push(event);
        });
    listen(client);
    // Our own message is first a local echo; it has come through /sync when the SDK has matched
    // the remote echo to it (status back to null under the server's event id).
    const synced = (eventId) => received.find((e) => e.getId() === eventId && e.status === null);

    await step("startClient until PREPARED", async () => {
        const errors = [];
        client.on(ClientEvent.Sync, (s, prev, data) => {
            if (s === SyncState.Error) errors.push(describeError(data?.error));
        });
        const prepared = waitFor(
            client,
            ClientEvent.Sync,
            () => client.getSyncState() === SyncState.Prepared || client.getSyncState() === SyncState.Syncing,
            STEP_TIMEOUT_MS - 2000,
            "initial sync",
        );
        await client.startClient({ initialSyncLimit: 10 });
        await prepared.catch((e) => {
            throw new CompatFailure(`${e.message}${errors.length ? `; sync errors: ${errors.join("; ")}` : ""}`);
        });
        return client.getSyncState();
    });

    await step("create a room", async () => {
        const res = await call(
            "createRoom",
            client.createRoom({ preset: Preset.PrivateChat, visibility: Visibility.Private, name: `js oauth ${suffix}` }),
        );
        check(res.room_id?.startsWith("!"), `odd room_id ${res.room_id}`);
        roomId = res.room_id;
        await waitFor(client, ClientEvent.Room, () => !!client.getRoom(roomId), 10_000, "the room arriving through sync");
        return roomId;
    });

    async function sendAndSee(c, body) {
        const res = await call("sendTextMessage", c.sendTextMessage(roomId, body));
        check(res.event_id?.startsWith("$"), `odd event_id ${res.event_id}`);
        const what = `${res.event_id} arriving through sync`;
        await waitFor(c, RoomEvent.LocalEchoUpdated, () => !!synced(res.event_id), 10_000, what).catch((e) => {
            const seen = received.map((x) => ({ id: x.getId(), status: x.status, body: x.getContent().body }));
            throw new CompatFailure(`${e.message}; timeline has ${safeJson(seen)}`);
        });
        const got = synced(res.event_id);
        check(
            got.getContent().body === body && got.getSender() === me.user_id,
            () => `sync gave ${safeJson(got.event)}`,
        );
        return res.event_id;
    }

    await step("send a message and see it arrive through sync", async () => sendAndSee(client, `hello over oauth ${suffix}`));

    // The refresh function the SDK's HTTP layer calls on M_UNKNOWN_TOKEN, called here directly
    // (the access token lives minutes); the session then resumes from the tokens it persisted, as a
    // client restarting would.
    let resumed;
    await step("OidcTokenRefresher refreshes; a client resumed with the new tokens syncs and sends", async () => {
        await call("OidcTokenRefresher initialisation", refresher.oidcClientReady);
        const oldAccess = client.getAccessToken();
        const tokens = await call("doRefreshAccessToken", refresher.doRefreshAccessToken(client.getRefreshToken()));
        check(!!tokens.accessToken && tokens.accessToken !== oldAccess, "the refresh gave no new access token");
        check(!!tokens.refreshToken && tokens.refreshToken !== client.getRefreshToken(), "the refresh token did not rotate");
        check(persisted.length === 1 && persisted[0].accessToken === tokens.accessToken, "persistTokens was not called");
        client.stopClient();
        resumed = newClient(baseUrl, {
            userId: me.user_id,
            deviceId: me.device_id,
            accessToken: persisted[0].accessToken,
            refreshToken: persisted[0].refreshToken,
            tokenRefreshFunction: refresher.doRefreshAccessToken.bind(refresher),
        });
        const w = await call("whoami with the refreshed token", resumed.whoami());
        check(w.user_id === me.user_id && w.device_id === me.device_id, `whoami after refresh: ${safeJson(w)}`);
        listen(resumed);
        const prepared = waitFor(
            resumed,
            ClientEvent.Sync,
            () => resumed.getSyncState() === SyncState.Prepared || resumed.getSyncState() === SyncState.Syncing,
            10_000,
            "initial sync after the refresh",
        );
        await resumed.startClient({ initialSyncLimit: 10 });
        await prepared;
        check(resumed.getRoom(roomId)?.getMyMembership() === "join", "the room is missing after the refresh");
        await sendAndSee(resumed, `hello after refresh ${suffix}`);
        return tokens.expiry ? `new token expires ${tokens.expiry.toISOString()}` : "no expiry given";
    });

    await step("logout ends the session", async () => {
        const token = resumed.getAccessToken();
        await call("logout", resumed.logout(true));
        const probe = newClient(baseUrl, { accessToken: token });
        let e = null;
        try {
            await probe.whoami();
        } catch (x) {
            e = x;
        }
        check(e?.errcode === "M_UNKNOWN_TOKEN", () => `whoami after logout: ${e ? describeError(e) : "succeeded"}`);
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
    err(`js-sdk oauth compat: FAIL at step ${stepNo} '${stepName}': ${msg}`);
    if (sdkLog.length) {
        err("  last matrix-js-sdk log lines:");
        for (const l of sdkLog.slice(-8)) err(`    ${l}`);
    }
    stopAll();
    process.exit(1);
}

const baseArg = process.argv[2];
if (process.argv.length !== 3 || !/^https?:\/\//.test(baseArg || "")) {
    err("usage: node oauth_login.mjs BASE_URL   (e.g. http://127.0.0.1:8008)");
    process.exit(2);
}
const baseUrl = baseArg.replace(/\/+$/, "");
const sdkVersion = JSON.parse(
    readFileSync(new URL("./node_modules/matrix-js-sdk/package.json", import.meta.url), "utf8"),
).version;
out(`[js-oauth] matrix-js-sdk ${sdkVersion} on Node ${process.version} against ${baseUrl}`);

const hardTimer = setTimeout(() => fail(`timed out after ${TOTAL_TIMEOUT_MS / 1000} s`), TOTAL_TIMEOUT_MS);
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${describeError(e)}`));

try {
    await run(baseUrl);
} catch (e) {
    fail(e instanceof CompatFailure ? e.message : `${e?.name || "Error"}: ${describeError(e)}`);
}
clearTimeout(hardTimer);
stopAll();
out(`js-sdk oauth compat: OK (${checks} checks)`);
process.exit(0);
