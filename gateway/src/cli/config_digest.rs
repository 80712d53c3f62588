//! `gateway config-digest`: the digest a gateway started with a configuration file binds into its RA-TLS identity.
//!
//! It prints the digest on the first line, then the [`SecurityDocument`] it hashes, keys sorted (pretty-printed;
//! the digest is over the compact form, which the gateway logs at start and serves). An app owner or auditor runs it on the published
//! configuration and pins the digest in the agents' gateway policy (`config_digest = ["<digest>"]`). The trusted
//! simulated roots are read from the files the configuration names, as `gateway run` reads them.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{GatewayConfig, SecurityDocument};

/// Why no digest could be computed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDigestError {
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The trust anchors it names could not be read.
    #[error("trust anchors")]
    TrustAnchors(#[source] attestation::settings::SettingsError),
    /// The document could not be written.
    #[error("configuration document")]
    Document(#[source] attestation::config_digest::DocumentError),
}

/// The security document of the configuration at `path` and its digest.
pub fn document_of(
    path: &Path,
) -> Result<(SecurityDocument, attestation::ConfigDigest), ConfigDigestError> {
    let config = GatewayConfig::load(path)?;
    let anchors = config
        .attestation
        .settings
        .trust_anchors()
        .map_err(ConfigDigestError::TrustAnchors)?;
    let document = SecurityDocument::new(&config, anchors.simulated_root_fingerprints());
    let digest = document.digest().map_err(ConfigDigestError::Document)?;
    Ok((document, digest))
}

/// Prints the digest and the document of the configuration at `path`; exit status 1 and the reason on error.
pub fn run(path: &Path) -> ExitCode {
    match document_of(path) {
        Ok((document, digest)) => {
            println!("{digest}");
            match document
                .canonical()
                .and_then(|c| serde_json::to_string_pretty(&c).map_err(Into::into))
            {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("error: writing the document: {e}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // A configuration error names the file itself; the others are about what the file names.
            let chain = crate::report::error_chain(&e);
            match &e {
                ConfigDigestError::Config(_) => eprintln!("error: {chain}"),
                _ => eprintln!("error: {}: {chain}", path.display()),
            }
            ExitCode::FAILURE
        }
    }
}
