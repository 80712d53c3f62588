//! Trusted roots of the AMD key hierarchy.
//!
//! AMD's real ARKs and ASKs for Milan, Genoa and Turin are built in (the PEM files under `amd/`, as published by
//! AMD's Key Distribution Service, `https://kdsintf.amd.com/vcek/v1/<product>/cert_chain`). SHA-256 fingerprints
//! of the DER certificates:
//!
//! | certificate | SHA-256 |
//! |---|---|
//! | ARK-Milan | `69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd` |
//! | SEV-Milan (ASK) | `67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b` |
//! | ARK-Genoa | `4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1` |
//! | SEV-Genoa (ASK) | `5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521` |
//! | ARK-Turin | `1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a` |
//! | SEV-Turin (ASK) | `5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185` |
//!
//! A simulated root is trusted only when the caller adds it ([`crate::TrustAnchors`]).

use std::sync::OnceLock;

use super::claims::SnpProduct;
use crate::error::VerifyError;
use crate::snp::cert::AmdCert;

/// A root the verifier trusts: an ARK, and the ASK that may be omitted from evidence.
#[derive(Debug, Clone)]
pub(crate) struct TrustedRoot {
    /// The processor generation this root serves.
    pub product: SnpProduct,
    /// Whether this is a simulated root.
    pub simulated: bool,
    /// The pinned ARK.
    pub ark: AmdCert,
    /// The ASK, used when evidence does not carry one (VCEK only).
    pub ask: Option<AmdCert>,
}

const AMD_PEMS: [(SnpProduct, &str, &str); 3] = [
    (
        SnpProduct::Milan,
        include_str!("amd/ark_milan.pem"),
        include_str!("amd/ask_milan.pem"),
    ),
    (
        SnpProduct::Genoa,
        include_str!("amd/ark_genoa.pem"),
        include_str!("amd/ask_genoa.pem"),
    ),
    (
        SnpProduct::Turin,
        include_str!("amd/ark_turin.pem"),
        include_str!("amd/ask_turin.pem"),
    ),
];

/// AMD's real roots, parsed once.
pub(crate) fn amd_roots() -> &'static [TrustedRoot] {
    static ROOTS: OnceLock<Vec<TrustedRoot>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        AMD_PEMS
            .iter()
            .filter_map(|(product, ark, ask)| {
                // The built-in PEMs are constants checked by this module's tests; a parse failure would drop
                // the root (and fail those tests), never accept anything.
                let ark = AmdCert::from_pem_or_der("ARK", ark.as_bytes()).ok()?;
                let ask = AmdCert::from_pem_or_der("ASK", ask.as_bytes()).ok()?;
                Some(TrustedRoot {
                    product: *product,
                    simulated: false,
                    ark,
                    ask: Some(ask),
                })
            })
            .collect()
    })
}

/// Build a trusted simulated root from its ARK certificate (PEM or DER).
pub(crate) fn simulated_root(ark: &[u8]) -> Result<TrustedRoot, VerifyError> {
    let ark = AmdCert::from_pem_or_der("ARK", ark)?;
    if ark.subject != ark.issuer {
        return Err(VerifyError::Malformed {
            part: "ARK certificate",
            reason: format!("simulated root {} is not self-issued", ark.subject_text),
        });
    }
    ark.check_signed(&ark)?;
    let product = [SnpProduct::Milan, SnpProduct::Genoa, SnpProduct::Turin]
        .into_iter()
        .find(|p| ark.subject_text.contains(p.as_str()))
        .unwrap_or(SnpProduct::Milan);
    Ok(TrustedRoot {
        product,
        simulated: true,
        ark,
        ask: None,
    })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn builtin_roots_parse_and_chain_and_match_their_fingerprints() {
        let roots = amd_roots();
        assert_eq!(roots.len(), 3);
        let expected = [
            "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
            "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
            "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        ];
        for (root, fp) in roots.iter().zip(expected) {
            assert_eq!(hex::encode(Sha256::digest(&root.ark.der)), fp);
            root.ark.check_signed(&root.ark).unwrap();
            root.ark.check_signed(root.ask.as_ref().unwrap()).unwrap();
            assert!(!root.ark.looks_simulated());
        }
    }
}
