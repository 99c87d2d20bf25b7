//! What FetchDisk trusts over TLS (`https`, `ftps`): the system's root certificates plus the
//! operator's `--fetch-ca-file` certificates (a private image registry's CA, say).
//!
//! One rustls configuration, built once at startup, serves both downloaders, so HTTPS and
//! FTPS always trust the same roots. Certificates are always verified, names included: there
//! is deliberately no switch to turn that off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use rustls_platform_verifier::Verifier;

use crate::fetch::error::FetchError;

/// The TLS client configuration of fetches.
#[derive(Clone, Debug)]
pub struct FetchTls {
    config: Arc<ClientConfig>,
}

impl FetchTls {
    /// Trusts the system's roots and every certificate in `ca_files` (PEM). Fails, naming the
    /// file, when one cannot be read or holds no valid certificate.
    pub fn load(ca_files: &[PathBuf]) -> anyhow::Result<FetchTls> {
        let mut extra = Vec::new();
        for path in ca_files {
            let certs = read_ca_file(path)
                .with_context(|| format!("--fetch-ca-file {}", path.display()))?;
            extra.extend(certs);
        }
        if !extra.is_empty() {
            tracing::info!(
                certificates = extra.len(),
                files = ca_files.len(),
                "https and ftps fetches trust the CA certificates of --fetch-ca-file besides \
                 the system's"
            );
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let config = match Verifier::new_with_extra_roots(extra, provider) {
            // "dangerous" only in name: this is the platform verifier, checking every chain
            // and name, with more roots than the system's.
            Ok(verifier) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier)),
            // Only when the system has no roots and no CA file was given (the files were
            // checked above). Plain http and ftp still work; TLS trusts no server.
            Err(err) => {
                tracing::warn!(error = %err,
                    "no CA certificates: https and ftps fetches will fail (install the \
                     system's CA certificates, or give --fetch-ca-file)");
                builder.with_root_certificates(RootCertStore::empty())
            }
        }
        .with_no_client_auth();
        Ok(FetchTls {
            config: Arc::new(config),
        })
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// The certificates of a PEM file, each checked to be usable as a root.
fn read_ca_file(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).context("cannot read the file")?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("not a valid PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")"
        ));
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| anyhow!("certificate {} is not usable as a CA: {e}", i + 1))?;
    }
    Ok(certs)
}

/// A failure to trust a server's certificate, anywhere in an error's chain of sources, as the
/// error the job fails with. Retrying cannot fix it, so the caller gives up at once.
pub(super) fn certificate_refused(
    err: &(dyn std::error::Error + 'static),
    host: &str,
) -> Option<FetchError> {
    let tls = find_tls_error(err)?;
    let about_certificate = matches!(
        tls,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
    );
    about_certificate.then(|| {
        FetchError::FetchFailed(format!(
            "the TLS certificate of {host} was refused: {tls} (a certificate must be valid \
             for the host's name and signed by a CA the platform trusts)"
        ))
    })
}

fn find_tls_error<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's `source()` skips the error it wraps (which may be another io::Error
        // wrapping the TLS error, as reqwest's connector makes them), so step into it.
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_ca_files_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = write(dir.path(), "empty.pem", "just text\n");
        let garbage = write(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        );
        let truncated = write(
            dir.path(),
            "truncated.pem",
            "-----BEGIN CERTIFICATE-----\nbm90IGEg\n",
        );
        for (path, says) in [
            (&missing, "cannot read"),
            (&empty, "no PEM certificate"),
            (&garbage, "not usable as a CA"),
            (&truncated, "not a valid PEM file"),
        ] {
            let err = FetchTls::load(std::slice::from_ref(path)).unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(says), "{text}");
        }
    }

    #[test]
    fn the_system_roots_alone_load_and_reqwest_takes_the_config() {
        let tls = FetchTls::load(&[]).unwrap();
        // reqwest recognises a preconfigured rustls config only if it is its rustls version.
        reqwest::Client::builder()
            .tls_backend_preconfigured((*tls.client_config()).clone())
            .build()
            .expect("reqwest takes the shared rustls configuration");
    }

    #[test]
    fn certificate_errors_are_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // As reqwest's connector reports it: an io::Error in an io::Error.
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let io = std::io::Error::other(inner);
        let err = certificate_refused(&io, "images.example.com").unwrap();
        assert_eq!(err.code(), "FETCH_FAILED");
        let text = err.to_string();
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains("images.example.com"), "{text}");
        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, "something else");
        assert!(certificate_refused(&other, "x").is_none());
    }
}
