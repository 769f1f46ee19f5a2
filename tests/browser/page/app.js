// Boots the full Hydrogen web client UI (RootViewModel/RootView: login screen,
// room list, room view, composer) from hydrogen-view-sdk, the same way
// hydrogen-web's own src/main.js does.
//
// Query parameters:
//   hs=<homeserver base URL>   pre-filled homeserver on the login screen
//   olm=1                      enable end-to-end encryption support (loads
//                              libolm); off by default so the test only needs
//                              the plain Client-Server API.
import {
    Platform,
    createNavigation,
    createRouter,
    RootViewModel,
    FeatureSet,
} from "hydrogen-view-sdk";

const params = new URLSearchParams(location.search);
const homeserver = params.get("hs") || "";
const withOlm = params.get("olm") === "1";

const assetPaths = {
    downloadSandbox: "/hydrogen/assets/download-sandbox.html",
    worker: "/hydrogen/assets/main.js",
    // Hydrogen's Client needs the service worker handler (it hands the access
    // token to sw.js for authenticated media); served from the page root so
    // its scope covers the page.
    serviceWorker: "/sw.js",
};
if (withOlm) {
    assetPaths.olm = {
        wasm: "/olm/olm.wasm",
        legacyBundle: "/olm/olm_legacy.js",
        wasmBundle: "/olm/olm.js",
    };
}

function report(state, detail) {
    window.__e2e = Object.assign(window.__e2e || {}, { state, detail });
}

async function main() {
    report("booting");
    const container = document.getElementById("app");
    const config = { defaultHomeServer: homeserver };
    const platform = new Platform({ container, assetPaths, config, options: { development: true } });
    const navigation = createNavigation();
    platform.setNavigation(navigation);
    await platform.init();
    const urlRouter = createRouter({ navigation, history: platform.history });
    urlRouter.attach();
    const features = await FeatureSet.load(platform.settingsStorage);
    if (withOlm) {
        // start loading in the background, as hydrogen-web's main.js does
        platform.loadOlm();
        platform.loadOlmWorker();
    }
    const vm = new RootViewModel({ platform, urlRouter, navigation, features });
    await vm.load();
    platform.createAndMountRootView(vm);
    report("mounted");
}

main().catch((err) => {
    console.error(`hydrogen boot failed: ${err && err.message}\n${err && err.stack}`);
    report("boot-error", String(err && err.stack || err));
});
