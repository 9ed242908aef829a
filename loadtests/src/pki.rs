//! Certificates for TLS tests, made with rcgen: a CA and the certificates it signs,
//! written as PEM files (what the daemons' `--tls-*` flags and the catalog's `tls_*`
//! parameters take). Every certificate names `127.0.0.1` and `localhost`.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The daemons' flags presenting this certificate, trusting `ca`.
    pub fn flags(&self, ca: &Path) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec!["--tls-cert".into(), path(&self.cert), "--tls-key".into(), path(&self.key), "--tls-ca".into(), path(ca)]
    }
}

/// A test certificate authority in a directory.
pub struct TestCa {
    name: String,
    dir: PathBuf,
    cert: Certificate,
    key: KeyPair,
    /// The CA's certificate (what `--tls-ca` names).
    pub ca_file: PathBuf,
}

impl TestCa {
    /// A new CA called `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem())?;
        Ok(TestCa { name: name.into(), dir: dir.to_path_buf(), cert, key, ca_file })
    }

    /// A certificate for `who` (server and client use), signed by this CA.
    pub fn issue(&self, who: &str) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, who);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let stem = self.dir.join(format!("{}-{who}", self.name));
        let files = CertFiles { cert: stem.with_extension("pem"), key: stem.with_extension("key") };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}
