//! What the tunnel lab tests share: our `tunnel-endpoint` binary started on `tg0` in a lab host, as the gateway's
//! endpoint or as a pair of gateway and CVM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]
#![allow(dead_code)]

use std::path::Path;

use test_support::tunnel::{EndpointProc, KeyPair, Pair};
use test_support::{Host, Lab, Scratch};

/// Our endpoint's binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tunnel-endpoint");

/// Our endpoint in `host` with tunnel address `address` on `tg0`.
pub(crate) fn endpoint(
    lab: &Lab,
    host: Host,
    key: &KeyPair,
    address: &str,
    more: &[String],
) -> EndpointProc {
    EndpointProc::start_on(lab, host, Path::new(BIN), key, ("tg0", address), more).unwrap()
}

/// The gateway's endpoint, `10.0.0.1/24` on `tg0`, with `more` arguments (peers, timers).
pub(crate) fn gateway_endpoint(lab: &Lab, key: &KeyPair, more: &[String]) -> EndpointProc {
    endpoint(lab, Host::Gateway, key, "10.0.0.1/24", more)
}

/// The lab, a scratch directory named `name`, and a pair of our endpoints on TUN device `tun` (see
/// [`Pair::start`]), the CVM's with `cvm_flags`.
pub(crate) fn lab_pair(name: &str, tun: &str, cvm_flags: &[String]) -> (Lab, Scratch, Pair) {
    let lab = Lab::up().unwrap();
    let dir = Scratch::new(name);
    let pair = Pair::start(&lab, Path::new(BIN), &dir, tun, cvm_flags).unwrap();
    (lab, dir, pair)
}

/// New key pairs in `dir`, one for each of `names`.
pub(crate) fn keys<const N: usize>(dir: &Scratch, names: [&str; N]) -> [KeyPair; N] {
    names.map(|name| KeyPair::generate(dir, name).unwrap())
}
