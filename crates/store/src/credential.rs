//! The credential a node presents to NATS: a user name and a password.
//!
//! Owns generating one (for the private nats-server `haetae serve` starts), its file (JSON,
//! `{"user": "...", "password": "..."}`, mode 0600), and keeping the password out of sight:
//! `Debug` never shows it, errors never quote the file, and URLs are redacted before they reach
//! an error or a log line. Never talks to NATS itself.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The user name of a generated credential.
pub const GENERATED_USER: &str = "haetae";
/// Random bytes in a generated password (256 bits; 43 base64url characters).
const GENERATED_PASSWORD_BYTES: usize = 32;
/// Largest credential file read, bytes: a credential is two short strings.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A NATS user and password. Cheap to clone; `Debug` shows the user only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    user: String,
    password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the NATS credential file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the NATS credential file {path} is not valid (line {line}, column {column}): it must hold {{\"user\": \"...\", \"password\": \"...\"}}, both non-empty"
    )]
    Invalid { path: PathBuf, line: usize, column: usize },
    #[error("cannot write the NATS credential file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Credential {
    /// A credential from its parts; `None` when either is empty.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Option<Credential> {
        let credential = Credential { user: user.into(), password: password.into() };
        (!credential.user.is_empty() && !credential.password.is_empty()).then_some(credential)
    }

    /// A fresh credential: user [`GENERATED_USER`], a password of 256 random bits in base64url
    /// (so it can be written into a nats-server config file without quoting rules).
    pub fn generate() -> Credential {
        Credential::generate_for(GENERATED_USER)
    }

    /// A fresh credential for `user` (which must be config-safe: letters, digits, `-`, `_`).
    pub fn generate_for(user: &str) -> Credential {
        use base64::Engine;
        let bytes: [u8; GENERATED_PASSWORD_BYTES] = rand::random();
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Credential { user: user.into(), password }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// True when both parts can be written into a nats-server config string as they are.
    pub(crate) fn is_config_safe(&self) -> bool {
        let safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        safe(&self.user) && safe(&self.password)
    }

    /// Reads a credential file an operator wrote (for `--nats-url` deployments). Warns when
    /// other users can read it, as ssh does for keys, but does not refuse.
    pub fn read(path: &Path) -> Result<Credential, CredentialError> {
        let (credential, mode) = read_file(path)?;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the NATS credential file can be read by other users; chmod 600 it");
        }
        Ok(credential)
    }

    /// The credential of a private nats-server: read from `path` when it exists (so a restart
    /// keeps working), generated and written there with mode 0600 otherwise. A file whose mode
    /// lets others read it is tightened to 0600.
    pub fn load_or_create(path: &Path) -> Result<Credential, CredentialError> {
        Credential::load_or_create_for(path, GENERATED_USER)
    }

    /// [`Credential::load_or_create`] for a named user (a deployment's node, admin or route
    /// user). A file that exists is used as it is, whatever user it names.
    pub fn load_or_create_for(path: &Path, user: &str) -> Result<Credential, CredentialError> {
        match read_file(path) {
            Ok((credential, mode)) => {
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "tightening the NATS credential file to mode 600");
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|source| CredentialError::Write { path: path.to_path_buf(), source })?;
                }
                Ok(credential)
            }
            Err(CredentialError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let credential = Credential::generate_for(user);
                let text = serde_json::to_vec_pretty(&credential).expect("a credential serializes");
                write_private(path, &text).map_err(|source| CredentialError::Write { path: path.to_path_buf(), source })?;
                tracing::info!(path = %path.display(), user, "generated a NATS credential");
                Ok(credential)
            }
            Err(error) => Err(error),
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

fn read_file(path: &Path) -> Result<(Credential, u32), CredentialError> {
    let read = |source| CredentialError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read)?;
    let mode = file.metadata().map_err(read)?.permissions().mode() & 0o777;
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE_BYTES), &mut text).map_err(read)?;
    // serde_json's message may quote the offending value (the password): keep only the position.
    let credential: Credential = serde_json::from_slice(&text)
        .map_err(|e| CredentialError::Invalid { path: path.to_path_buf(), line: e.line(), column: e.column() })?;
    if credential.user.is_empty() || credential.password.is_empty() {
        return Err(CredentialError::Invalid { path: path.to_path_buf(), line: 1, column: 1 });
    }
    Ok((credential, mode))
}

/// Writes `credential` to `path` (JSON, mode 0600), replacing what was there.
pub fn write_file(path: &Path, credential: &Credential) -> Result<(), CredentialError> {
    let text = serde_json::to_vec_pretty(credential).expect("a credential serializes");
    write_private(path, &text).map_err(|source| CredentialError::Write { path: path.to_path_buf(), source })
}

/// Writes `bytes` to `path` so that no reader other than this user ever sees them: a new file
/// created with mode 0600 next to it, then renamed over `path` (an existing file's looser mode
/// is not inherited).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// `urls` (comma-separated NATS URLs) with every password replaced by `***`, for logs and errors.
pub fn redact_url(urls: &str) -> String {
    urls.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let rest_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[rest_start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}***{}", &url[..rest_start + colon + 1], &url[rest_start + at..]),
        // A user name alone may be a token: hide it too.
        None => format!("{}***{}", &url[..rest_start], &url[rest_start + at..]),
    }
}

/// Decodes `%XX` escapes in a URL's user or password part.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact_url("nats://a:4222,nats://b:4222"), "nats://a:4222,nats://b:4222");
        assert_eq!(redact_url("nats://haetae:s3cr%40t@a:4222"), "nats://haetae:***@a:4222");
        assert_eq!(redact_url("nats://u:p@a:1, tls://u:p@b:2/x"), "nats://u:***@a:1, tls://u:***@b:2/x");
        assert_eq!(redact_url("u:p:q@a:4222"), "u:***@a:4222");
        assert_eq!(redact_url("nats://token@a:4222"), "nats://***@a:4222");
        assert_eq!(redact_url("nats://a:4222/p@th"), "nats://a:4222/p@th");
    }

    #[test]
    fn debug_hides_the_password() {
        let credential = Credential::generate();
        assert!(credential.is_config_safe());
        assert_eq!(credential.password().len(), 43);
        assert!(!format!("{credential:?}").contains(credential.password()));
        assert_ne!(credential, Credential::generate());
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("s3cr%40t%3A").as_deref(), Some("s3cr@t:"));
        assert_eq!(percent_decode("bad%4"), None);
    }

    #[test]
    fn an_invalid_file_is_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credential.json");
        std::fs::write(&path, r#"{"user": "u", "password": 12345678}"#).unwrap();
        let error = Credential::read(&path).unwrap_err().to_string();
        assert!(!error.contains("12345678"), "{error}");
    }
}
