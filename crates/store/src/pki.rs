//! A deployment's private certificate authority, and the certificates it gives its nats-servers.
//!
//! Owns generating the CA (once per deployment; its key never leaves the deployment's PKI
//! folder), issuing server certificates (valid for TLS server and client use, since nats-servers
//! dial each other's route ports), and their files (PEM, keys mode 0600). Never decides which
//! servers exist or where they listen: callers name them and give their addresses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::credential::write_private;

/// The CA certificate, in the PKI folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key, in the PKI folder (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How long a CA certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate is valid: rotate (reissue and restart, one DC at a time) within it.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable CA ({message}); move the PKI folder away to start a new CA")]
    InvalidCa { path: PathBuf, message: String },
    #[error("cannot issue a certificate for {name}: {message}")]
    Issue { name: String, message: String },
}

/// The files one nats-server needs for TLS: its certificate and key, and the CA it trusts.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A certificate authority that can issue certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("cert_path", &self.cert_path).finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, length: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack before now: clocks of the three DCs' hosts disagree by seconds.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::seconds(length.as_secs() as i64);
}

/// A CA's certificate parameters, its validity aside.
fn ca_params(name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

impl Authority {
    /// The CA in `dir` (`ca.pem`, `ca-key.pem`), created there on first use. `dir` is made
    /// private (0700): it holds the CA's key.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Authority, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() && key_path.exists() {
            let read = |path: &Path| {
                std::fs::read_to_string(path).map_err(|source| PkiError::Read { path: path.to_path_buf(), source })
            };
            let invalid = |message: String| PkiError::InvalidCa { path: cert_path.clone(), message };
            if !read(&cert_path)?.starts_with("-----BEGIN CERTIFICATE-----") {
                return Err(invalid("not a PEM certificate".into()));
            }
            let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| invalid(e.to_string()))?;
            // What a certificate it issues names of its issuer (subject name, key identifier)
            // follows from the CA's name and key alone, so the issuer is rebuilt from those
            // instead of parsing the certificate (which would need an X.509 parser).
            let issuer = Issuer::new(ca_params(name).map_err(|e| invalid(e.to_string()))?, key);
            return Ok(Authority { issuer, cert_path });
        }
        let issue_error = |e: rcgen::Error| PkiError::Issue { name: name.to_string(), message: e.to_string() };
        let key = KeyPair::generate().map_err(issue_error)?;
        let mut params = ca_params(name).map_err(issue_error)?;
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(issue_error)?;
        // The key first: a certificate without its key would be taken for a finished CA.
        write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|source| PkiError::Write { path: key_path, source })?;
        std::fs::write(&cert_path, cert.pem()).map_err(|source| PkiError::Write { path: cert_path.clone(), source })?;
        Ok(Authority { issuer: Issuer::new(params, key), cert_path })
    }

    /// The CA certificate file clients and servers trust.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Issues a certificate for the server `name`, reachable at `hosts` (IP addresses or DNS
    /// names; clients and peers check the address they dialled against them), and writes it to
    /// `dir/<name>.pem` and `dir/<name>-key.pem` (0600). Returns the files a nats-server config
    /// names. A new key each time: reissuing is how a certificate is rotated.
    pub fn issue_server(&self, dir: &Path, name: &str, hosts: &[String]) -> Result<TlsFiles, PkiError> {
        let issue_error = |e: rcgen::Error| PkiError::Issue { name: name.to_string(), message: e.to_string() };
        let mut sans: Vec<String> = hosts.to_vec();
        sans.push(name.to_string());
        let mut params = CertificateParams::new(sans).map_err(issue_error)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        // Server for clients and for routes dialled in; client for the routes it dials out.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, SERVER_VALIDITY);
        let key = KeyPair::generate().map_err(issue_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_error)?;
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })?;
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}-key.pem"));
        write_private(&key_file, key.serialize_pem().as_bytes()).map_err(|source| PkiError::Write { path: key_file.clone(), source })?;
        std::fs::write(&cert_file, cert.pem()).map_err(|source| PkiError::Write { path: cert_file.clone(), source })?;
        Ok(TlsFiles { cert: cert_file, key: key_file, ca: self.cert_path.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_is_created_once_and_issues_server_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let authority = Authority::load_or_create(&pki, "test CA").unwrap();
        let first = std::fs::read(pki.join(CA_CERT_FILE)).unwrap();
        let files = authority.issue_server(&pki, "dc-a", &["127.0.0.1".into()]).unwrap();
        assert!(std::fs::read_to_string(&files.cert).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&pki.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&pki), 0o700);
        let again = Authority::load_or_create(&pki, "test CA").unwrap();
        assert_eq!(std::fs::read(again.cert_path()).unwrap(), first, "the CA is reused, not replaced");
        again.issue_server(&pki, "dc-b", &["10.0.0.2".into()]).unwrap();
    }
}
