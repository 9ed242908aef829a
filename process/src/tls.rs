//! Mutual TLS on Reprise's gRPC links (ctl to controller, controller to worker).
//!
//! The daemons take `--tls-cert`, `--tls-key` and `--tls-ca` together: with them, each
//! serves over TLS, asks every caller for a certificate signed by the CA, and presents
//! its own certificate when it calls another daemon. ctl takes `--tls-ca` (to check the
//! controller) and the pair (to be let in). The files are read and checked once, at
//! start, so a wrong path or a key that is not PEM is one clear error before anything
//! listens.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The certificate flags of every gRPC party.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM certificate (chain) this process presents on its gRPC links, signed by the
    /// cluster's CA; with --tls-key.
    #[arg(long = "tls-cert", global = true, env = "REPRISE_TLS_CERT", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", global = true, env = "REPRISE_TLS_KEY", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// PEM certificate of the CA this process trusts. It turns TLS on: a daemon then
    /// accepts only callers with a certificate the CA signed, and checks the certificate
    /// of every daemon it calls.
    #[arg(long = "tls-ca", global = true, env = "REPRISE_TLS_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {path}: {source}")]
    Read { flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{flag} {path} is not a PEM {what}: {reason}")]
    NotPem { flag: &'static str, path: PathBuf, what: &'static str, reason: String },
    #[error("{0}")]
    Incomplete(&'static str),
}

/// A daemon's two sides of mutual TLS: serving, and calling other daemons.
#[derive(Clone, Debug)]
pub struct MutualTls {
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
}

impl TlsArgs {
    /// A daemon's TLS: all three files, or none (plain gRPC).
    pub fn mutual(&self) -> Result<Option<MutualTls>, TlsError> {
        let (Some(cert), Some(key), Some(ca)) = (&self.cert, &self.key, &self.ca) else {
            if self.cert.is_none() && self.key.is_none() && self.ca.is_none() {
                return Ok(None);
            }
            return Err(TlsError::Incomplete(
                "--tls-cert, --tls-key and --tls-ca go together: a daemon's gRPC links are mutual TLS or plain",
            ));
        };
        let (identity, ca) = (identity(cert, key)?, authority(ca)?);
        Ok(Some(MutualTls {
            server: ServerTlsConfig::new().identity(identity.clone()).client_ca_root(ca.clone()),
            client: ClientTlsConfig::new().ca_certificate(ca).identity(identity),
        }))
    }

    /// A client's TLS (ctl): `--tls-ca` turns it on; the certificate pair, when given, is
    /// what a controller with mutual TLS lets in.
    pub fn client(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        let pair = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(TlsError::Incomplete("--tls-cert and --tls-key go together")),
        };
        let Some(ca) = &self.ca else {
            return match pair {
                Some(_) => Err(TlsError::Incomplete(
                    "--tls-cert needs --tls-ca, the CA that signed the controller's certificate",
                )),
                None => Ok(None),
            };
        };
        let config = ClientTlsConfig::new().ca_certificate(authority(ca)?);
        Ok(Some(match pair {
            Some((cert, key)) => config.identity(identity(cert, key)?),
            None => config,
        }))
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { flag, path: path.to_path_buf(), source })
}

/// The certificates in `path`, at least one, checked to be PEM.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(flag, path)?;
    let not_pem = |reason: String| TlsError::NotPem { flag, path: path.to_path_buf(), what: "certificate", reason };
    let parsed: Vec<_> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| not_pem(e.to_string()))?;
    if parsed.is_empty() {
        return Err(not_pem("no BEGIN CERTIFICATE section".into()));
    }
    Ok(pem)
}

fn identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let cert = certificates("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NotPem {
        flag: "--tls-key",
        path: key.to_path_buf(),
        what: "private key",
        reason: e.to_string(),
    })?;
    Ok(Identity::from_pem(cert, key_pem))
}

fn authority(ca: &Path) -> Result<Certificate, TlsError> {
    Ok(Certificate::from_pem(certificates("--tls-ca", ca)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> TlsArgs {
        TlsArgs { cert: cert.map(PathBuf::from), key: key.map(PathBuf::from), ca: ca.map(PathBuf::from) }
    }

    #[test]
    fn a_daemon_takes_all_three_files_or_none() {
        assert!(args(None, None, None).mutual().unwrap().is_none());
        let half = args(Some("c.pem"), None, Some("ca.pem")).mutual().unwrap_err().to_string();
        assert_eq!(
            half,
            "--tls-cert, --tls-key and --tls-ca go together: a daemon's gRPC links are mutual TLS or plain"
        );
    }

    #[test]
    fn a_client_needs_the_ca_for_its_pair_and_both_halves_of_the_pair() {
        assert!(args(None, None, None).client().unwrap().is_none());
        assert_eq!(
            args(Some("c.pem"), Some("k.pem"), None).client().unwrap_err().to_string(),
            "--tls-cert needs --tls-ca, the CA that signed the controller's certificate"
        );
        assert_eq!(
            args(None, Some("k.pem"), Some("ca.pem")).client().unwrap_err().to_string(),
            "--tls-cert and --tls-key go together"
        );
    }

    #[test]
    fn files_that_are_missing_or_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let junk = junk.to_str().unwrap();
        let missing = args(None, None, Some("/nonexistent/ca.pem")).client().unwrap_err().to_string();
        assert!(missing.starts_with("cannot read --tls-ca /nonexistent/ca.pem: "), "{missing}");
        let not_pem = args(None, None, Some(junk)).client().unwrap_err().to_string();
        assert_eq!(not_pem, format!("--tls-ca {junk} is not a PEM certificate: no BEGIN CERTIFICATE section"));
    }
}
