//! Attestation for tee-gateway.
//!
//! This crate owns everything about TEE evidence: its types, the attesters that produce it (configfs-tsm,
//! `/dev/sev-guest`, `/dev/tdx_guest`, simulated), the verifiers that check it (TDX through `dcap-qvl`, SEV-SNP
//! through `sev`), the policy engine, and RA-TLS certificates together with the `rustls` verifiers that check them.
#![forbid(unsafe_code)]
