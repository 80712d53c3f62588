//! The control listener under load and under bad input, over real mutual RA-TLS against the real gateway process:
//! 2,000 registrations and re-registrations with every answer checked and the gateway's memory reported before
//! and after; then a duplicate key, garbage JSON, an oversized body and a wrong protocol version, each answered
//! with its typed error while the registry stays unchanged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod registration;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cvm_agent::client::{register_once, AttemptError};
use protocol::control::{ErrorBody, ErrorCode, InstanceId, PublicKey, RegisterRequest};
use registration::*;
use test_support::{wait_for, Host};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn request(instance: &InstanceId, key: PublicKey) -> RegisterRequest {
    register_request(instance, key)
}

/// Posts raw bytes to `/v1/register` over mutual RA-TLS and returns the status and the body.
async fn post_raw(tls: Arc<rustls::ClientConfig>, body: Vec<u8>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect((Host::Gateway.addr(), CONTROL_PORT))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("gateway").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/register HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(&body).await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.get(9..12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn typed(body: &str) -> ErrorBody {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("untyped error body {body:?}: {e}"))
}

/// The lab gateway with room for every registration of the test: all are of one app, beyond the default per-app
/// quota.
fn one_app_of_thousands() -> GatewayConfig {
    GatewayConfig {
        max_instances_per_app: Some(4096),
        ..GatewayConfig::default()
    }
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn two_thousand_registrations_and_every_bad_request() {
    let (lab, world) = World::in_lab("reg-load");
    let gw = world.start_gateway(&lab, &one_app_of_thousands()).unwrap();
    let pid = gw.id();
    let tls = client_tls(&world);
    let url = control_url();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Wait for the control listener.
    wait_for(Duration::from_secs(30), "the control listener", || {
        Ok(
            std::net::TcpStream::connect((Host::Gateway.addr(), CONTROL_PORT))
                .ok()
                .map(|_| ()),
        )
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", world.read_log("gateway")));

    const INSTANCES: usize = 1000;
    let instances: Vec<(InstanceId, PublicKey)> = (0..INSTANCES)
        .map(|_| (InstanceId::random(), random_key()))
        .collect();
    let register_all = |round: &str| -> HashMap<InstanceId, Ipv4Addr> {
        rt.block_on(async {
            let mut out = HashMap::new();
            for chunk in instances.chunks(8) {
                let mut set = tokio::task::JoinSet::new();
                for (id, key) in chunk {
                    let (tls, url, req) = (tls.clone(), url.clone(), request(id, *key));
                    set.spawn(async move {
                        let answer =
                            register_once(&url, tls, &req, Duration::from_secs(10), |_| {}).await;
                        (req.instance_id, answer)
                    });
                }
                while let Some(done) = set.join_next().await {
                    let (id, answer) = done.unwrap();
                    let answer = answer.unwrap_or_else(|e| panic!("{round}: {id}: {e}"));
                    assert_eq!(answer.instance_id, id);
                    assert_eq!(answer.gateway.tunnel_address, Ipv4Addr::new(10, 0, 0, 1));
                    assert_eq!(
                        answer.gateway.endpoint,
                        format!("{}:{WG_PORT}", Host::Gateway.addr())
                    );
                    out.insert(id, answer.tunnel_address);
                }
            }
            out
        })
    };

    let started = Instant::now();
    let first = register_all("registration");
    let rss_before = rss_kib(pid);
    let second = register_all("re-registration");
    let rss_after = rss_kib(pid);
    let elapsed = started.elapsed();
    let distinct: HashSet<_> = first.values().collect();
    assert_eq!(
        distinct.len(),
        INSTANCES,
        "every instance has its own address"
    );
    assert_eq!(first, second, "re-registration keeps every address");
    assert_eq!(world.registry().len(), INSTANCES);
    eprintln!(
        "{} registrations + {} re-registrations in {elapsed:?} ({:.0}/s); gateway RSS after the first round \
         {rss_before} KiB, after the second {rss_after} KiB",
        INSTANCES,
        INSTANCES,
        (2 * INSTANCES) as f64 / elapsed.as_secs_f64()
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // Bad requests: each gets its typed error, and the registry does not change.
    let before = world.registry();
    let (taken_id, taken_key) = &instances[0];
    let outcome = rt.block_on(register_once(
        &url,
        tls.clone(),
        &request(&InstanceId::random(), *taken_key),
        Duration::from_secs(10),
        |_| {},
    ));
    match outcome {
        Err(AttemptError::Refused {
            status: 409, body, ..
        }) => {
            assert_eq!(body.error, ErrorCode::KeyInUse);
            assert!(body.message.contains(taken_id.as_str()), "{}", body.message);
        }
        other => panic!("duplicate key: {other:?}"),
    }
    let (status, body) = rt.block_on(post_raw(
        tls.clone(),
        b"{\"version\": 1, \"app_id\": ".to_vec(),
    ));
    assert_eq!(
        (status, typed(&body).error),
        (400, ErrorCode::MalformedRequest),
        "{body}"
    );
    let mut big = serde_json::to_value(request(&InstanceId::random(), random_key())).unwrap();
    big["padding"] = "x".repeat(64 * 1024).into();
    let (status, body) = rt.block_on(post_raw(tls.clone(), serde_json::to_vec(&big).unwrap()));
    assert_eq!(
        (status, typed(&body).error),
        (413, ErrorCode::BodyTooLarge),
        "{body}"
    );
    let mut v7 = serde_json::to_value(request(&InstanceId::random(), random_key())).unwrap();
    v7["version"] = 7.into();
    let (status, body) = rt.block_on(post_raw(tls.clone(), serde_json::to_vec(&v7).unwrap()));
    let e = typed(&body);
    assert_eq!(
        (status, e.error),
        (400, ErrorCode::UnsupportedVersion),
        "{body}"
    );
    assert!(
        e.message.contains("unsupported protocol version 7"),
        "{}",
        e.message
    );
    assert_eq!(
        world.registry(),
        before,
        "refused requests leave the registry unchanged"
    );
}
