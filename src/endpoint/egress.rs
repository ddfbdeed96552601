//! What an endpoint's own HTTP client is built from: its client certificate
//! (mutual TLS), an extra CA, an egress proxy. Read and parsed once, at
//! start-up: `validate()` refuses a config whose files are missing or do not
//! parse, so the relay never starts with an endpoint it cannot reach.
//!
//! Errors name the file, never its content, and never a proxy URL (it may
//! carry credentials).

use std::path::{Path, PathBuf};

/// Why a client certificate, CA or proxy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path} has no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path} is not a PKCS#8 PEM private key (\"BEGIN PRIVATE KEY\"; convert with `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    NotPkcs8 { path: PathBuf },
    #[error("certificate {cert} and key {key} do not make an identity: {error}")]
    Identity { cert: PathBuf, key: PathBuf, error: String },
    #[error("{path} is not a PEM CA certificate: {error}")]
    Ca { path: PathBuf, error: String },
    #[error("client_cert and client_key go together")]
    Half,
    #[error("must be an http:// or https:// URL with a host")]
    ProxyUrl,
    #[error("is not a usable proxy: {0}")]
    Proxy(String),
}

fn read(path: &Path) -> Result<Vec<u8>, EgressError> {
    std::fs::read(path).map_err(|error| EgressError::Read { path: path.to_path_buf(), error })
}

/// The client certificate (chain) and its PKCS#8 key, as one identity.
pub fn identity(cert: &Path, key: &Path) -> Result<reqwest::Identity, EgressError> {
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    if !contains(&cert_pem, b"-----BEGIN CERTIFICATE-----") {
        return Err(EgressError::NoCertificate { path: cert.to_path_buf() });
    }
    // native-tls takes PKCS#8 only; say so rather than its bare "not PKCS#8".
    if !contains(&key_pem, b"-----BEGIN PRIVATE KEY-----") {
        return Err(EgressError::NotPkcs8 { path: key.to_path_buf() });
    }
    reqwest::Identity::from_pkcs8_pem(&cert_pem, &key_pem).map_err(|e| EgressError::Identity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        error: error_chain(&e),
    })
}

/// An endpoint's `client_cert` and `client_key`: both or neither.
pub fn identity_of(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<reqwest::Identity>, EgressError> {
    match (cert, key) {
        (Some(cert), Some(key)) => identity(cert, key).map(Some),
        (None, None) => Ok(None),
        _ => Err(EgressError::Half),
    }
}

/// The certificates of a PEM CA file (one or more), trusted besides the system's.
pub fn ca(path: &Path) -> Result<Vec<reqwest::Certificate>, EgressError> {
    let pem = read(path)?;
    if !contains(&pem, b"-----BEGIN CERTIFICATE-----") {
        return Err(EgressError::NoCertificate { path: path.to_path_buf() });
    }
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| EgressError::Ca { path: path.to_path_buf(), error: error_chain(&e) })
}

/// A proxy for every request of a client: `http://` or `https://`, with
/// optional `user:password@` (sent as `Proxy-Authorization: Basic`).
pub fn proxy(url: &str) -> Result<reqwest::Proxy, EgressError> {
    let parsed = url::Url::parse(url).map_err(|_| EgressError::ProxyUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(EgressError::ProxyUrl);
    }
    // reqwest's error would quote the URL: keep only its kind.
    reqwest::Proxy::all(url).map_err(|e| EgressError::Proxy(error_chain(&e.without_url())))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        for good in ["http://proxy:3128", "https://user:pass@proxy.example:8443", "http://127.0.0.1:8080/"] {
            proxy(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["socks5://proxy:1080", "proxy:3128", "http://", "ftp://u:s3cret@proxy"] {
            let err = proxy(bad).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn certificate_files_must_exist_and_parse() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = identity(&missing, &missing).unwrap_err().to_string();
        assert!(err.starts_with("cannot read") && err.contains("missing.pem"), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        assert!(matches!(identity(&junk, &junk), Err(EgressError::NoCertificate { .. })));
        assert!(matches!(ca(&junk), Err(EgressError::NoCertificate { .. })));
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let rsa = dir.path().join("rsa.key");
        std::fs::write(&rsa, "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n").unwrap();
        assert!(matches!(identity(&cert, &rsa), Err(EgressError::NotPkcs8 { .. })));
        assert!(matches!(identity_of(Some(&cert), None), Err(EgressError::Half)));
        assert!(identity_of(None, None).unwrap().is_none());
    }
}
