//! Verified-claims values for tests that need claims without producing and verifying evidence.

/// Simulated SEV-SNP claims (Milan, VCEK-signed, default TCBs, not debug) with `measurement` in every byte of the
/// launch measurement.
pub use attestation::claims::fixtures::sim_snp;
