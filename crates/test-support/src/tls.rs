//! Certificates made at test time (feature `tls`): a certificate authority and the server
//! certificates it signs, written as PEM files into a private temp directory.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::TempDir;

/// Name of the CA certificate file inside a [`TestCa`]'s directory.
const CA_FILE: &str = "ca.pem";

/// A certificate authority generated at test time, with its certificate written to
/// [`ca_file`](TestCa::ca_file) (PEM). A client that adds this file to its root certificates
/// trusts the servers it signed (for example a server started with
/// [`NatsServerOptions::with_tls`](crate::NatsServerOptions::with_tls)); a client that trusts
/// another `TestCa` does not.
///
/// ```no_run
/// # #[cfg(feature = "tls")] {
/// use test_support::TestCa;
/// let other = TestCa::new("not the server's CA");
/// let path = other.ca_file(); // removed when `other` is dropped
/// # let _ = path; }
/// ```
pub struct TestCa {
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
    name: String,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa")
            .field("name", &self.name)
            .field("ca_file", &self.ca_file())
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// Generates a CA named `name` (its common name) in a fresh temp directory.
    ///
    /// # Panics
    ///
    /// If the key or certificate cannot be generated or written.
    pub fn new(name: &str) -> TestCa {
        let dir = TempDir::new()
            .unwrap_or_else(|e| panic!("test-support: cannot create a temp dir for a CA: {e}"));
        TestCa::in_dir(dir, name)
    }

    /// Generates a CA whose files live in `dir` (removed with it).
    pub(crate) fn in_dir(dir: TempDir, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("test-support: CA parameters: {e}"));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()
            .unwrap_or_else(|e| panic!("test-support: cannot generate a CA key: {e}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("test-support: cannot self-sign the CA: {e}"));
        write(&dir.path.join(CA_FILE), &cert.pem());
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            name: name.to_owned(),
        }
    }

    /// The CA certificate (PEM), to add to a client's root certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path.join(CA_FILE)
    }

    /// Issues a server certificate for `127.0.0.1` and `localhost`, writing
    /// `<stem>-cert.pem` and `<stem>-key.pem` into `dir`; returns their paths.
    ///
    /// # Panics
    ///
    /// If the key or certificate cannot be generated or written.
    pub fn issue_server_cert(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap_or_else(|e| panic!("test-support: server certificate parameters: {e}"));
        params
            .distinguished_name
            .push(DnType::CommonName, "nats-server (test)");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()
            .unwrap_or_else(|e| panic!("test-support: cannot generate a server key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("test-support: cannot sign the server certificate: {e}"));
        let cert_file = dir.join(format!("{stem}-cert.pem"));
        let key_file = dir.join(format!("{stem}-key.pem"));
        write(&cert_file, &cert.pem());
        write(&key_file, &key.serialize_pem());
        (cert_file, key_file)
    }
}

fn write(path: &Path, contents: &str) {
    fs::write(path, contents)
        .unwrap_or_else(|e| panic!("test-support: cannot write {}: {e}", path.display()));
}
