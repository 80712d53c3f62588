//! ClientHellos from a real TLS library (OpenSSL through Python, `tests/tools/hello_cases.py`) against the lab's
//! gateway: edge cases routed, and every bad input refused with its alert, deadline and counter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use test_support::clients::python;
use test_support::tls::alert;
use test_support::{testserver, Host, Lab};

use super::{counter, metrics, APP, BASE, CLIENT_HELLO_TIMEOUT_MS, CLIENT_PORT};

/// One case of `tests/tools/hello_cases.py`.
#[derive(Debug)]
struct HelloCase {
    sent_hex: String,
    answer: Vec<u8>,
    elapsed: Duration,
    closed: bool,
}

/// ClientHellos from a real TLS library (OpenSSL through Python), sent from the client host: one byte per TCP
/// segment, and split over records with 10 KB of unknown extension, are routed through a passthrough route to an
/// instance's raw echo port (the ClientHello comes back byte for byte); every bad input gets its alert or close
/// within its deadline, and its refusal counter rises by one.
pub(crate) fn client_hello_edge_cases(lab: &Lab) {
    let bad: Vec<(String, &str, Option<u8>)> = vec![
        (String::new(), "no_sni", Some(112)),
        (
            format!("bbbbbbbb22222222-8080.{BASE}"),
            "unknown_id",
            Some(112),
        ),
        (format!("{APP}-1.{BASE}"), "port_not_exposed", Some(112)),
        (
            format!("{APP}-8080gs.{BASE}"),
            "grpc_passthrough",
            Some(112),
        ),
        (
            format!("{APP}.other.test"),
            "unknown_base_domain",
            Some(112),
        ),
        (format!("xyz-8080.{BASE}"), "bad_host_name", Some(112)),
    ];
    let before = metrics(lab).unwrap();
    let names: Vec<&str> = bad.iter().map(|(n, _, _)| n.as_str()).collect();
    let names = serde_json::to_string(&names).unwrap();
    let echo_name = format!("{APP}-{}s.{BASE}", testserver::ECHO);
    let out = python(
        lab,
        Host::Client,
        "tests/tools/hello_cases.py",
        &[
            &Host::Gateway.addr().to_string(),
            &CLIENT_PORT.to_string(),
            &echo_name,
            &names,
        ],
    )
    .unwrap();
    let after = metrics(lab).unwrap();
    let mut cases = BTreeMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        cases.insert(
            text("case"),
            HelloCase {
                sent_hex: text("sent_hex"),
                answer: hex::decode(text("answer")).unwrap(),
                elapsed: Duration::from_secs_f64(v["elapsed"].as_f64().unwrap_or(f64::MAX)),
                closed: v["closed"].as_bool().unwrap_or(false),
            },
        );
    }
    let case = |name: &str| {
        cases
            .get(name)
            .unwrap_or_else(|| panic!("no result for {name}: {out}"))
    };
    let refusals = |text: &str, reason: &str| {
        counter(
            text,
            &format!("tee_gateway_refusals_total{{reason=\"{reason}\"}}"),
        )
    };
    for name in ["one_byte", "padded"] {
        let c = case(name);
        assert!(
            !c.sent_hex.is_empty() && hex::encode(&c.answer) == c.sent_hex,
            "{name}: the ClientHello did not come back from the instance's echo port: {c:?}"
        );
    }
    let quick = Duration::from_secs(2);
    for (name, reason, answers) in [
        (
            "too_large",
            "client_hello_too_large",
            vec![vec![], alert(50)],
        ),
        ("not_tls", "client_hello_malformed", vec![alert(50)]),
    ] {
        let c = case(name);
        assert!(c.closed && c.elapsed < quick, "{name}: {c:?}");
        assert!(answers.contains(&c.answer), "{name}: {c:?}");
        assert_eq!(
            refusals(&after, reason),
            refusals(&before, reason) + 1.0,
            "{reason}"
        );
    }
    let c = case("silent");
    let deadline = Duration::from_millis(CLIENT_HELLO_TIMEOUT_MS);
    assert!(
        c.closed
            && c.answer.is_empty()
            && c.elapsed >= deadline - Duration::from_millis(100)
            && c.elapsed < deadline + quick,
        "silent: {c:?}"
    );
    assert_eq!(
        refusals(&after, "client_hello_timeout"),
        refusals(&before, "client_hello_timeout") + 1.0
    );
    for (name, reason, description) in &bad {
        let c = case(&format!("bad:{name}"));
        assert!(c.closed && c.elapsed < quick, "{reason}: {c:?}");
        if let Some(d) = description {
            assert_eq!(c.answer, alert(*d), "{reason}");
        }
        assert_eq!(
            refusals(&after, reason),
            refusals(&before, reason) + 1.0,
            "{reason}"
        );
    }
    eprintln!(
        "ClientHello cases: one byte per segment and padded routed; {} bad inputs refused",
        bad.len() + 3
    );
}
