// Logging in to another service with haetae, in headless Chromium: the demo service
// (tests/oauth/demo_rp.py, started by run_rp.sh) sends the browser to haetae's login page, the
// person signs in and allows the service, and the service's page then says who they are.
//
//   node rp_login.mjs BASE_URL SERVICE_URL [OUT_DIR]
//
// Screenshots: OUT_DIR/rp-consent.png (haetae's consent page) and OUT_DIR/rp-login.png (the
// service, signed in). Exits non-zero with the reason on failure; the run is capped at 60 s.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const [BASE_URL, SERVICE_URL] = [process.argv[2], process.argv[3]].map((u) => (u || "").replace(/\/+$/, ""));
const OUT_DIR = path.resolve(process.argv[4] || path.join(HERE, "out"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const DEADLINE_MS = 60000;

if (!/^https?:\/\//.test(BASE_URL) || !/^https?:\/\//.test(SERVICE_URL)) {
    console.error("usage: node rp_login.mjs BASE_URL SERVICE_URL [OUT_DIR]");
    process.exit(2);
}
fs.mkdirSync(OUT_DIR, { recursive: true });
const deadline = setTimeout(() => {
    console.error("rp login: FAILED: took longer than 60 s");
    process.exit(1);
}, DEADLINE_MS);

async function register(username, password) {
    const url = `${BASE_URL}/_matrix/client/v3/register`;
    const body = { username, password };
    const first = await fetch(url, { method: "POST", body: JSON.stringify(body), signal: AbortSignal.timeout(15000) });
    const session = (await first.json()).session;
    body.auth = { type: "m.login.dummy", session };
    const done = await fetch(url, { method: "POST", body: JSON.stringify(body), signal: AbortSignal.timeout(15000) });
    if (done.status !== 200) throw new Error(`register: ${done.status} ${await done.text()}`);
    return (await done.json()).user_id;
}

let context;
let userDataDir;
let failed = false;
try {
    const username = `rp_${Date.now().toString(36)}`;
    const password = "a long enough password";
    const userId = await register(username, password);
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "haetae-rp-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
        viewport: { width: 900, height: 700 },
        timeout: 30000,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(20000);

    await page.goto(`${SERVICE_URL}/`);
    await page.getByRole("link", { name: "Sign in with haetae" }).click();
    await page.waitForURL((url) => url.href.startsWith(`${BASE_URL}/oauth2/authorize`));
    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("no access to your messages").waitFor();
    await page.screenshot({ path: path.join(OUT_DIR, "rp-consent.png") });
    await page.getByRole("button", { name: "Allow" }).click();
    await page.waitForURL((url) => url.href.startsWith(`${SERVICE_URL}/`) && !url.href.includes("/callback"));
    const sub = await page.locator("#sub").textContent();
    if (sub !== userId) throw new Error(`the service shows ${sub}, expected ${userId}`);
    const visits = await page.locator("#visits").textContent();
    if (visits !== "1") throw new Error(`visits ${visits}`);
    await page.screenshot({ path: path.join(OUT_DIR, "rp-login.png") });
    await page.reload();
    if ((await page.locator("#visits").textContent()) !== "2") throw new Error("the reload was not counted");
    console.log(`rp login: OK (${userId}; screenshots: ${path.join(OUT_DIR, "rp-consent.png")}, ${path.join(OUT_DIR, "rp-login.png")})`);
} catch (error) {
    failed = true;
    console.error(`rp login: FAILED: ${error.stack || error}`);
} finally {
    if (context) await context.close().catch(() => {});
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
    clearTimeout(deadline);
}
process.exit(failed ? 1 : 0);
