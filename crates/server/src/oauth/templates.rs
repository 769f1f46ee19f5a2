//! The login pages' markup: plain server-rendered HTML (no script), one stylesheet, labelled
//! fields and buttons in reading order, so a keyboard and a screen reader get through every page.
//! Every value that came from a request or a client registration goes through [`escape`].

pub use crate::html::escape;

/// A whole page: the site header, a main landmark with `body`, an optional notice or error.
pub fn page(title: &str, server_name: &str, body: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {server}</title>
<link rel="stylesheet" href="/oauth2/style.css">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="site"><span class="mark" aria-hidden="true">◆</span> <span class="brand">haetae</span> <span class="server">{server}</span></header>
<main id="main" class="card">
<h1>{title}</h1>
{body}
</main>
<footer class="site">Signed in through any data center: your session is stored in all of them.</footer>
</body>
</html>
"##,
        title = escape(title),
        server = escape(server_name),
    )
}

pub fn error_box(message: Option<&str>) -> String {
    match message {
        Some(message) => format!(r#"<p class="error" role="alert">{}</p>"#, escape(message)),
        None => String::new(),
    }
}

pub fn notice_box(message: Option<&str>) -> String {
    match message {
        Some(message) => format!(r#"<p class="notice" role="status">{}</p>"#, escape(message)),
        None => String::new(),
    }
}

pub fn hidden(name: &str, value: &str) -> String {
    format!(r#"<input type="hidden" name="{}" value="{}">"#, escape(name), escape(value))
}

/// The sign-in form.
pub fn login_form(csrf: &str, next: &str, username: &str, error: Option<&str>, signup_link: Option<&str>) -> String {
    let signup = signup_link
        .map(|href| format!(r#"<p class="alt">New here? <a href="{}">Create an account</a></p>"#, escape(href)))
        .unwrap_or_default();
    format!(
        r#"{error}
<form method="post" action="/oauth2/login">
{csrf}{next}
<label for="username">Username</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus value="{username}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" class="primary">Sign in</button>
</form>
{signup}"#,
        error = error_box(error),
        csrf = hidden("csrf", csrf),
        next = hidden("next", next),
        username = escape(username),
    )
}

/// The registration form.
pub fn signup_form(csrf: &str, next: &str, username: &str, needs_token: bool, error: Option<&str>) -> String {
    let token = if needs_token {
        r#"<label for="token">Registration token</label>
<input id="token" name="token" type="text" autocomplete="off" required>"#
    } else {
        ""
    };
    format!(
        r#"{error}
<form method="post" action="/oauth2/signup">
{csrf}{next}
<label for="username">Username</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus value="{username}" aria-describedby="username-help">
<p class="help" id="username-help">Lower-case letters, digits and <code>. _ = - /</code>.</p>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="new-password" minlength="8" required aria-describedby="password-help">
<p class="help" id="password-help">At least 8 characters.</p>
<label for="password_confirm">Password again</label>
<input id="password_confirm" name="password_confirm" type="password" autocomplete="new-password" minlength="8" required>
{token}
<button type="submit" class="primary">Create account</button>
</form>
<p class="alt">Already have an account? <a href="/oauth2/login?{next_query}">Sign in</a></p>"#,
        error = error_box(error),
        csrf = hidden("csrf", csrf),
        next = hidden("next", next),
        username = escape(username),
        next_query = escape(&serde_urlencoded::to_string([("next", next)]).unwrap_or_default()),
    )
}

/// What a client asks for, in words.
pub struct ConsentView<'a> {
    pub client_name: &'a str,
    pub client_uri: &'a str,
    pub tos_uri: Option<&'a str>,
    pub policy_uri: Option<&'a str>,
    pub user_id: &'a str,
    /// The Matrix device the client signs in as; None when it only learns who the person is.
    pub device_id: Option<&'a str>,
    /// Whether the client also learns the display name and username (OpenID Connect `profile`).
    pub profile: bool,
    pub redirect_host: &'a str,
}

fn consent_details(view: &ConsentView) -> String {
    let mut links = String::new();
    for (label, uri) in [("Terms of service", view.tos_uri), ("Privacy policy", view.policy_uri)] {
        if let Some(uri) = uri {
            links.push_str(&format!(r#" · <a href="{}" rel="noopener noreferrer">{label}</a>"#, escape(uri)));
        }
    }
    let grants = match view.device_id {
        Some(device) => format!(
            "<li>Read and send your messages, and everything else your account can do in Matrix</li>\n\
             <li>Appear in your session list as device <code>{}</code></li>",
            escape(device)
        ),
        None => {
            let profile = if view.profile { "<li>See your display name and username</li>\n" } else { "" };
            format!(
                "<li>Know that you are <strong>{}</strong></li>\n{profile}<li>Nothing else: no access to your messages or rooms</li>",
                escape(view.user_id)
            )
        }
    };
    let verb = if view.device_id.is_some() { "wants to sign in to your account" } else { "wants you to sign in with your account" };
    format!(
        r#"<p class="lead"><strong>{name}</strong> {verb} <strong>{user}</strong>.</p>
<p class="client"><a href="{uri}" rel="noopener noreferrer">{uri}</a>{links}</p>
<ul class="grants">
{grants}
</ul>"#,
        name = escape(view.client_name),
        user = escape(view.user_id),
        uri = escape(view.client_uri),
    )
}

/// The consent page of the authorization code grant: the request travels in hidden fields.
pub fn consent_form(view: &ConsentView, csrf: &str, fields: &[(String, String)]) -> String {
    let hidden_fields: String = fields.iter().map(|(k, v)| hidden(k, v)).collect();
    format!(
        r#"{details}
<p class="help">After you answer, you go back to <strong>{host}</strong>.</p>
<form method="post" action="/oauth2/authorize" class="actions">
{csrf}{hidden_fields}
<button type="submit" name="decision" value="allow" class="primary">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
<form method="post" action="/oauth2/logout" class="switch">{csrf}<button type="submit" class="link">Not {user}? Sign out</button></form>"#,
        details = consent_details(view),
        host = escape(view.redirect_host),
        csrf = hidden("csrf", csrf),
        user = escape(view.user_id),
    )
}

/// The device grant's code entry.
pub fn device_code_form(csrf: &str, code: &str, error: Option<&str>) -> String {
    format!(
        r#"{error}
<p class="lead">Enter the code your device shows.</p>
<form method="post" action="/device">
{csrf}
<label for="user_code">Code</label>
<input id="user_code" name="user_code" type="text" autocomplete="one-time-code" autocapitalize="characters" spellcheck="false" required autofocus value="{code}" placeholder="BCDF-GHJK">
<button type="submit" class="primary">Continue</button>
</form>"#,
        error = error_box(error),
        csrf = hidden("csrf", csrf),
        code = escape(code),
    )
}

/// The device grant's confirmation.
pub fn device_confirm_form(view: &ConsentView, csrf: &str, code: &str) -> String {
    format!(
        r#"{details}
<p class="help">Only allow this if you started signing in on a device and it shows the code <strong>{code}</strong>.</p>
<form method="post" action="/device" class="actions">
{csrf}{code_field}
<button type="submit" name="decision" value="allow" class="primary">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>"#,
        details = consent_details(view),
        code = escape(code),
        csrf = hidden("csrf", csrf),
        code_field = hidden("user_code", code),
    )
}

/// One row of the account page's session list.
pub struct DeviceRow {
    pub device_id: String,
    pub display_name: String,
    pub last_seen: String,
    pub kind: &'static str,
    pub highlighted: bool,
}

/// One row of the account page's list of services signed in to (OpenID Connect).
pub struct ServiceRow {
    pub family_id: String,
    pub name: String,
    pub since: String,
}

fn services_section(csrf: &str, services: &[ServiceRow]) -> String {
    if services.is_empty() {
        return String::new();
    }
    let rows: String = services
        .iter()
        .map(|service| {
            format!(
                r#"<li class="device">
<div><strong>{name}</strong><br><span class="meta">knows who you are · signed in {since}</span></div>
<form method="post" action="/account/services/delete">{csrf}{family}<button type="submit" aria-label="Sign out of {name}">Sign out</button></form>
</li>"#,
                name = escape(&service.name),
                since = escape(&service.since),
                csrf = hidden("csrf", csrf),
                family = hidden("session", &service.family_id),
            )
        })
        .collect();
    format!(
        r#"<section aria-labelledby="services-title">
<h2 id="services-title">Services you signed in to</h2>
<ul class="devices">
{rows}
</ul>
</section>"#
    )
}

pub fn account_page(user_id: &str, csrf: &str, devices: &[DeviceRow], services: &[ServiceRow], notice: Option<&str>, error: Option<&str>) -> String {
    let mut rows = String::new();
    for device in devices {
        rows.push_str(&format!(
            r#"<li class="device{class}" id="device-{id}">
<div><strong>{name}</strong><br><span class="meta"><code>{id}</code> · {kind} · last seen {seen}</span></div>
<form method="post" action="/account/devices/delete">{csrf}{device_field}<button type="submit" aria-label="Sign out {name_attr} ({id})">Sign out</button></form>
</li>"#,
            class = if device.highlighted { " highlighted" } else { "" },
            id = escape(&device.device_id),
            name = escape(&device.display_name),
            name_attr = escape(&device.display_name),
            kind = device.kind,
            seen = escape(&device.last_seen),
            csrf = hidden("csrf", csrf),
            device_field = hidden("device_id", &device.device_id),
        ));
    }
    if rows.is_empty() {
        rows.push_str(r#"<li class="device"><span class="meta">No signed-in sessions.</span></li>"#);
    }
    format!(
        r#"{notice}{error}
<p class="lead">Signed in as <strong>{user}</strong>.</p>
<section aria-labelledby="sessions-title">
<h2 id="sessions-title">Sessions</h2>
<ul class="devices">
{rows}
</ul>
</section>
{services}
<section aria-labelledby="password-title">
<h2 id="password-title">Change password</h2>
<form method="post" action="/account/password">
{csrf}
<label for="current_password">Current password</label>
<input id="current_password" name="current_password" type="password" autocomplete="current-password" required>
<label for="new_password">New password</label>
<input id="new_password" name="new_password" type="password" autocomplete="new-password" minlength="8" required>
<label for="new_password_confirm">New password again</label>
<input id="new_password_confirm" name="new_password_confirm" type="password" autocomplete="new-password" minlength="8" required>
<label class="check"><input type="checkbox" name="logout_devices" value="yes" checked> Sign out all sessions</label>
<button type="submit" class="primary">Change password</button>
</form>
</section>
<form method="post" action="/oauth2/logout" class="switch">{csrf}<button type="submit" class="link">Sign out of this browser</button></form>"#,
        notice = notice_box(notice),
        error = error_box(error),
        user = escape(user_id),
        csrf = hidden("csrf", csrf),
        services = services_section(csrf, services),
    )
}

/// A page with a message and nothing to do but go back.
/// The confirmation of a cross-signing reset (`m.oauth` user-interactive auth).
pub fn cross_signing_reset_form(user_id: &str, csrf: &str, window_min: u64) -> String {
    format!(
        r#"<p class="lead">Reset the cross-signing keys of <strong>{user}</strong>?</p>
<ul class="grants">
<li>Your app asked to replace the keys that prove your sessions are yours</li>
<li>Other people and your other sessions will need to verify you again</li>
<li>Your app may do this once within the next {window_min} minutes</li>
</ul>
<p class="help">Only allow this if you just asked your app to reset your identity or encryption.</p>
<form method="post" action="/account/cross_signing_reset" class="actions">
{csrf}
<button type="submit" class="primary">Allow the reset</button>
<a href="/account">Cancel</a>
</form>"#,
        user = escape(user_id),
        csrf = hidden("csrf", csrf),
    )
}

/// The question an application's sign-out request asks: sign out of this server too?
pub fn end_session_form(csrf: &str, fields: &[(String, String)], user_id: &str, client_name: Option<&str>) -> String {
    let hidden_fields: String = fields.iter().map(|(k, v)| hidden(k, v)).collect();
    let from = client_name.map(|name| format!(" {} asked to sign you out.", escape(name))).unwrap_or_default();
    format!(
        r#"<p class="lead">You are signed in as <strong>{user}</strong>.{from} Sign out of this server as well?</p>
<form method="post" action="/oauth2/end_session" class="actions">
{csrf}{hidden_fields}
<button type="submit" name="decision" value="sign_out" class="primary">Sign out</button>
<button type="submit" name="decision" value="stay">Stay signed in</button>
</form>"#,
        user = escape(user_id),
        csrf = hidden("csrf", csrf),
    )
}

pub fn message(text: &str, link: Option<(&str, &str)>) -> String {
    let link = link.map(|(href, label)| format!(r#"<p><a href="{}">{}</a></p>"#, escape(href), escape(label))).unwrap_or_default();
    format!(r#"<p class="lead">{}</p>{link}"#, escape(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_outside_is_escaped() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        let html = login_form("t", "/account", "\"><script>alert(1)</script>", Some("<b>"), None);
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>"));
        let view = ConsentView {
            client_name: "<img src=x>",
            client_uri: "https://e.com/\"onmouseover=",
            tos_uri: None,
            policy_uri: None,
            user_id: "@a:b",
            device_id: Some("<D>"),
            profile: false,
            redirect_host: "e.com",
        };
        let html = consent_form(&view, "t", &[("state".into(), "\"><x>".into())]);
        assert!(!html.contains("<img"));
        assert!(!html.contains("\"onmouseover"));
        assert!(!html.contains("<x>"));
        assert!(!html.contains("<D>"));
        let signin = ConsentView { device_id: None, profile: true, user_id: "@<u>:b", ..view };
        let html = consent_form(&signin, "t", &[]);
        assert!(html.contains("no access to your messages") && html.contains("display name"));
        assert!(!html.contains("<u>"));
    }
}
