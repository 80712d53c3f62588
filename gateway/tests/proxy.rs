//! End-to-end tests of the client-facing proxy with real clients (curl, openssl s_client) and backends on
//! loopback standing in for instances.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::proxy::directory::StaticDirectory;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serialises the tests whose timing matters, so they do not compete for the CPU with each other.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const I1: &str = "1111111111111111";
const I2: &str = "2222222222222222";
const I3: &str = "3333333333333333";

fn one_instance(addr: std::net::SocketAddr, port_proxy: bool) -> Arc<StaticDirectory> {
    let d = Arc::new(StaticDirectory::new());
    d.upsert(APP, I1, addr.ip(), [(addr.port(), port_proxy)]);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_termination_gets_the_backend_answer() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let port = backend.addr.port();
    // By app id and by instance id, name in mixed case.
    for id in [APP, I1, "AAAAAAAA11111111"] {
        let name = format!("{id}-{port}.{BASE}");
        let out = curl(&pki, gw.addr, &name, &["-w", "\n%{http_version}"]).await;
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            body.starts_with(&format!("instance={I1} source=none")),
            "{body}"
        );
        assert!(body.ends_with("\n1.1"), "ALPN should give HTTP/1.1: {body}");
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    let metrics = gw.proxy.render_metrics();
    assert!(
        metrics.contains(&format!(
            "tee_gateway_connections_total{{app=\"{APP}\",mode=\"terminate\"}} 3"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let name = format!("{APP}-{}.{BASE}", backend.addr.port());
    let sess = pki.dir.path().join("session.pem");
    let run = |extra: Vec<String>| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &gw.addr.to_string(),
            "-servername",
            &name,
            "-CAfile",
        ])
        .arg(&pki.ca_pem)
        .args(["-tls1_2", "-verify_return_error"])
        .args(extra)
        .stdin(std::process::Stdio::null());
        cmd.output().unwrap()
    };
    let first = run(vec!["-sess_out".into(), sess.display().to_string()]);
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.contains("Verify return code: 0"), "{text}");
    let second = run(vec!["-sess_in".into(), sess.display().to_string()]);
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(text.contains("Reused, TLSv1.2"), "{text}");
}

/// A TLS server backend with its own certificate, for passthrough.
async fn tls_backend(pki: &Pki, id: &str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    let files = pki.issue(
        &format!("backend-{id}"),
        &format!("backend-own-{id}"),
        &["backend.internal"],
    );
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let id = id.to_string();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (acceptor, id) = (acceptor.clone(), id.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls.write_all(format!("hello from {id}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_through_passthrough_sees_the_backends_own_certificate() {
    let pki = Pki::new();
    let (addr, task) = tls_backend(&pki, I1).await;
    let gw = Running::start(test_config(&pki), one_instance(addr, false)).await;
    let name = format!("{APP}-{}s.{BASE}", addr.port());
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &gw.addr.to_string(),
            "-servername",
            &name,
            "-CAfile",
        ])
        .arg(&pki.ca_pem)
        .args([
            "-verify_hostname",
            "backend.internal",
            "-quiet",
            "-verify_return_error",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"ping\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("hello from {I1}")),
        "{stdout} {stderr}"
    );
    assert!(
        stderr.contains(&format!("CN = backend-own-{I1}")),
        "{stderr}"
    );
    assert!(!stderr.contains("CN = apps.test"), "{stderr}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_one_byte_per_segment_and_padded_over_records_are_routed() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Record).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let name = format!("{APP}-{}s.{BASE}", backend.addr.port());

    // One byte per TCP segment (TCP_NODELAY, a pause between writes).
    let wire = records(&client_hello_message(Some(&name), 0), 16384);
    let mut s = connect(gw.addr).await;
    for b in &wire {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    // Then 1 MB: past the first 64 KiB the passthrough relay moves it with splice(2).
    let bulk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    s.write_all(&bulk).await.unwrap();
    s.shutdown().await.unwrap();
    let (answer, _, closed) = read_answer(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    let expected_len = wire.len() + bulk.len();
    assert_eq!(backend.received.lock().unwrap()[0][wire.len()..], bulk[..]);
    let spliced = gw.proxy.metrics().spliced.load(Ordering::Relaxed);
    assert!(spliced > 800_000, "spliced {spliced}");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("instance={I1} len={expected_len}")
    );

    // 10 KB of padding, split over 1000-byte records and 700-byte writes.
    let wire = records(&client_hello_message(Some(&name), 10 * 1024), 1000);
    assert!(wire.len() > 10 * 1024);
    let mut s = connect(gw.addr).await;
    for part in wire.chunks(700) {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.shutdown().await.unwrap();
    let (answer, _, _) = read_answer(&mut s, Duration::from_secs(5)).await;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("instance={I1} len={}", wire.len())
    );
    let received = backend.received.lock().unwrap().clone();
    assert_eq!(received[1], wire, "the ClientHello is replayed verbatim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_alert_or_close_within_its_deadline_and_is_counted() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Record).await;
    let config = test_config(&pki);
    let hello_deadline = Duration::from_millis(config.client_hello_timeout_ms);
    let gw = Running::start(config, one_instance(backend.addr, false)).await;
    let port = backend.addr.port();
    let cases: Vec<(Option<String>, &str, Option<u8>)> = vec![
        (None, "no_sni", Some(112)),
        (
            Some(format!("bbbbbbbb22222222-{port}.{BASE}")),
            "unknown_id",
            Some(112),
        ),
        (
            Some(format!("{APP}-1.{BASE}")),
            "port_not_exposed",
            Some(112),
        ),
        (
            Some(format!("{APP}-{port}gs.{BASE}")),
            "grpc_passthrough",
            Some(112),
        ),
        (
            Some(format!("{APP}.other.test")),
            "unknown_base_domain",
            Some(112),
        ),
        (
            Some(format!("xyz-{port}.{BASE}")),
            "bad_host_name",
            Some(112),
        ),
    ];
    for (sni, reason, alert_desc) in cases {
        let before = gw.refusals(reason);
        let mut s = connect(gw.addr).await;
        s.write_all(&records(&client_hello_message(sni.as_deref(), 0), 16384))
            .await
            .unwrap();
        let (answer, took, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
        assert!(closed, "{reason}: connection left open");
        assert!(took < Duration::from_secs(1), "{reason}: took {took:?}");
        assert_eq!(answer, alert(alert_desc.unwrap()), "{reason}");
        assert_eq!(gw.refusals(reason), before + 1, "{reason}");
    }

    // A ClientHello over the cap: decode_error, at once.
    let before = gw.refusals("client_hello_too_large");
    let mut s = connect(gw.addr).await;
    let big = records(
        &client_hello_message(Some(&format!("{APP}-{port}s.{BASE}")), 65420),
        4000,
    );
    assert!(big.len() > 65536 + 16 * 5);
    let _ = s.write_all(&big).await;
    let (answer, took, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
    assert!(closed && took < Duration::from_secs(1), "{took:?}");
    assert!(answer.is_empty() || answer == alert(50), "{answer:?}");
    assert_eq!(
        gw.refusals("client_hello_too_large"),
        before + 1,
        "{}",
        gw.proxy.render_metrics()
    );

    // No bytes at all: closed at the ClientHello deadline.
    let before = gw.refusals("client_hello_timeout");
    let mut s = connect(gw.addr).await;
    let (answer, took, closed) = read_answer(&mut s, Duration::from_secs(5)).await;
    assert!(closed && answer.is_empty());
    assert!(
        took >= hello_deadline - Duration::from_millis(50)
            && took < hello_deadline + Duration::from_millis(700),
        "{took:?}"
    );
    assert_eq!(gw.refusals("client_hello_timeout"), before + 1);

    // Not TLS at all.
    let before = gw.refusals("client_hello_malformed");
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
    assert!(closed);
    assert_eq!(answer, alert(50));
    assert_eq!(gw.refusals("client_hello_malformed"), before + 1);

    // curl sees the refusal as a TLS error naming the alert.
    let out = curl(&pki, gw.addr, &format!("cccccccc33333333.{BASE}"), &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("unrecognized name") || err.contains("unrecognized_name"),
        "{err}"
    );
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the instance"
    );
}

/// Runs `n` curl requests on new connections (one curl process, parallel transfers); returns each
/// transfer's HTTP status and total time in seconds.
async fn curl_many(pki: &Pki, gw: std::net::SocketAddr, name: &str, n: usize) -> Vec<(u16, f64)> {
    let dir = TempDir::new("curl");
    let cfg = dir.path().join("urls");
    let mut text = String::new();
    for _ in 0..n {
        text.push_str(&format!(
            "url = \"https://{name}:{}/\"\noutput = \"/dev/null\"\n",
            gw.port()
        ));
    }
    std::fs::write(&cfg, text).unwrap();
    let resolve = format!("{name}:{}:{}", gw.port(), gw.ip());
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--parallel",
            "--parallel-max",
            "8",
            "--max-time",
            "20",
            "-H",
            "Connection: close",
            "--cacert",
        ])
        .arg(&pki.ca_pem)
        .args([
            "--resolve",
            &resolve,
            "-w",
            "%{http_code} %{time_total}\n",
            "-K",
        ])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (code, t) = line.split_once(' ').unwrap();
            (code.parse().unwrap(), t.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_spreads_evenly_and_survives_stopped_and_blackholed_instances() {
    let _timing = TIMING.lock().await;
    let pki = Pki::new();
    // Three instances on 127.0.0.2-4, same port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = Arc::new(StaticDirectory::new());
    let mut backends = Vec::new();
    for (i, id) in [I1, I2, I3].iter().enumerate() {
        let bind = format!("127.0.0.{}:{port}", i + 2);
        backends.push(Backend::start_on(&bind, id, BackendKind::Http).await);
        d.upsert(
            APP,
            id,
            format!("127.0.0.{}", i + 2).parse().unwrap(),
            [(port, false)],
        );
    }
    let gw = Running::start(test_config(&pki), d.clone()).await;
    let name = format!("{APP}-{port}.{BASE}");

    let n = 3000;
    let results = curl_many(&pki, gw.addr, &name, n).await;
    assert_eq!(results.len(), n);
    assert!(results.iter().all(|(code, _)| *code == 200));
    for b in &backends {
        let count = b.accepted.load(Ordering::SeqCst);
        let even = n / 3;
        assert!(
            count.abs_diff(even) * 100 <= even * 15,
            "{}: {count} of {n} requests, outside ±15% of {even}",
            b.id
        );
    }
    let counts: Vec<usize> = backends
        .iter()
        .map(|b| b.accepted.load(Ordering::SeqCst))
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), n);

    // One backend stopped: connections to it are refused, and no client request fails.
    backends[0].stop();
    let results = curl_many(&pki, gw.addr, &name, 300).await;
    assert_eq!(results.len(), 300);
    assert!(results.iter().all(|(code, _)| *code == 200), "{results:?}");
    assert_eq!(backends[0].accepted.load(Ordering::SeqCst), counts[0]);
    assert_eq!(gw.refusals("upstream_unreachable"), 0);

    // Drained: instance 2 gets no new connections.
    assert!(gw.proxy.drains().drain(I2));
    let before = backends[1].accepted.load(Ordering::SeqCst);
    let before3 = backends[2].accepted.load(Ordering::SeqCst);
    let results = curl_many(&pki, gw.addr, &name, 200).await;
    assert!(results.iter().all(|(code, _)| *code == 200), "{results:?}");
    assert_eq!(backends[1].accepted.load(Ordering::SeqCst), before);
    assert_eq!(backends[2].accepted.load(Ordering::SeqCst), before3 + 200);
    gw.proxy.drains().undrain(I2);
}

/// A listener that never accepts, with its queue filled, so new connection attempts hang (SYNs dropped).
fn blackhole(ip: &str, port: u16) -> (socket2::Socket, Vec<std::net::TcpStream>) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            fillers.push(c);
        }
    }
    (s, fillers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_instance_delays_requests_by_at_most_the_stagger() {
    let _timing = TIMING.lock().await;
    let pki = Pki::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.5:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let good = Backend::start_on(&format!("127.0.0.5:{port}"), I1, BackendKind::Http).await;
    let (_hole, _fill) = blackhole("127.0.0.6", port);
    let d = Arc::new(StaticDirectory::new());
    d.upsert(APP, I1, "127.0.0.5".parse().unwrap(), [(port, false)]);
    d.upsert(APP, I2, "127.0.0.6".parse().unwrap(), [(port, false)]);
    let config = test_config(&pki);
    let stagger = config.connect_stagger_ms as f64 / 1000.0;
    let gw = Running::start(config, d).await;
    let name = format!("{APP}-{port}.{BASE}");
    let results = curl_many(&pki, gw.addr, &name, 40).await;
    assert_eq!(results.len(), 40);
    assert!(results.iter().all(|(code, _)| *code == 200), "{results:?}");
    let mut sorted: Vec<f64> = results.iter().map(|(_, t)| *t).collect();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let fastest = sorted[0];
    let slowest = sorted[sorted.len() - 1];
    // About half the requests try the blackhole first and wait out the stagger; none waits much longer (the
    // margin allows for a loaded machine; the gateway's own measurement below is tighter).
    assert!(
        slowest - fastest < stagger + 1.0,
        "slowest {slowest:.3}s vs fastest {fastest:.3}s, stagger {stagger}s"
    );
    assert!(
        slowest >= stagger,
        "some requests should have met the blackhole first: {sorted:?}"
    );
    assert_eq!(good.accepted.load(Ordering::SeqCst), 40);
    // The gateway's own view: every upstream connect took at most the stagger (0.2 s) plus 0.3 s. The margin is
    // for a machine busy with the other tests of this binary: with 0.1 s, 3 connects in 40 landed in the
    // 0.3..0.5 s bucket under load, while a connect that waits for the blackhole's timeout takes seconds.
    let metrics = gw.proxy.render_metrics();
    assert!(
        metrics.contains("tee_gateway_upstream_connect_seconds_bucket{le=\"0.5\"} 40"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tee_gateway_upstream_connect_seconds_bucket{le=\"0.1\"} 40"),
        "no connect met the blackhole: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_app_limit_is_enforced_with_a_clear_refusal() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Record).await;
    let mut config = test_config(&pki);
    config.max_connections_per_app = 2;
    let gw = Running::start(config, one_instance(backend.addr, false)).await;
    let name = format!("{APP}-{}s.{BASE}", backend.addr.port());
    let hello = records(&client_hello_message(Some(&name), 0), 16384);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(gw.addr).await;
        s.write_all(&hello).await.unwrap();
        held.push(s);
    }
    let t0 = Instant::now();
    while backend.accepted.load(Ordering::SeqCst) < 2 && t0.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut s = connect(gw.addr).await;
    s.write_all(&hello).await.unwrap();
    let (answer, took, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
    assert!(closed && took < Duration::from_secs(1));
    assert_eq!(answer, alert(40));
    assert_eq!(gw.refusals("app_connection_limit"), 1);
    assert_eq!(gw.proxy.connections().per_app().get(APP), Some(&2));
    // Closing one frees a slot.
    drop(held.pop());
    let t0 = Instant::now();
    while gw.proxy.connections().per_app().get(APP) != Some(&1)
        && t0.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut s = connect(gw.addr).await;
    s.write_all(&hello).await.unwrap();
    s.shutdown().await.unwrap();
    let (answer, _, _) = read_answer(&mut s, Duration::from_secs(3)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with(&format!("instance={I1} ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_carries_the_real_client_address() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, true)).await;
    let name = format!("{APP}-{}.{BASE}", backend.addr.port());
    let out = curl(&pki, gw.addr, &name, &["-w", "\n%{local_ip}:%{local_port}"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, local) = text.rsplit_once('\n').unwrap();
    assert_eq!(body, format!("instance={I1} source={local}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_connections_finish_then_closes_the_rest() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Record).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let addr = gw.addr;
    let name = format!("{APP}-{}s.{BASE}", backend.addr.port());
    let mut open = connect(addr).await;
    open.write_all(&records(&client_hello_message(Some(&name), 0), 16384))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grace = Duration::from_secs(gw.proxy.config().shutdown_grace_secs);
    let stopping = tokio::spawn(gw.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connections once shutdown began.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The open connection still works within the grace period.
    open.write_all(b"more").await.unwrap();
    let took = stopping.await.unwrap();
    assert!(
        took >= grace - Duration::from_millis(300) && took < grace + Duration::from_secs(1),
        "{took:?}"
    );
    let (_, _, closed) = read_answer(&mut open, Duration::from_secs(2)).await;
    assert!(closed, "the connection is closed after the grace period");
}

async fn admin_curl(
    admin: std::net::SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "5",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(format!("http://{admin}{path}"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// The subject CN of the certificate the proxy presents for `name`.
fn presented_cn(pki: &Pki, gw: std::net::SocketAddr, name: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &gw.to_string(),
            "-servername",
            name,
            "-CAfile",
        ])
        .arg(&pki.ca_pem)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("subject=CN = ")
                .or_else(|| l.strip_prefix("subject=CN="))
        })
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token_lists_drains_reloads_and_serves_metrics() {
    use gateway::proxy::admin;
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let mut config = test_config(&pki);
    config.cert_reload_interval_secs = 1;
    let cert_files = config.certificates[0].clone();
    let gw = Running::start(config, one_instance(backend.addr, false)).await;
    let name = format!("{APP}-{}.{BASE}", backend.addr.port());

    // No token: refuses to start. A short token: refused too.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = admin::serve(gw.proxy.clone(), l, None, rx.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, admin::AdminError::NoToken), "{err}");
    assert!(matches!(
        admin::router(gw.proxy.clone(), "short"),
        Err(admin::AdminError::WeakToken)
    ));

    let token = "0123456789abcdef-admin-token";
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = l.local_addr().unwrap();
    let server = tokio::spawn(admin::serve(gw.proxy.clone(), l, Some(token.into()), rx));

    for path in ["/v1/apps", "/metrics"] {
        let (code, body) = admin_curl(admin_addr, None, "GET", path).await;
        assert_eq!(code, 401, "{body}");
        let (code, _) = admin_curl(
            admin_addr,
            Some("0123456789abcdef-wrong-token"),
            "GET",
            path,
        )
        .await;
        assert_eq!(code, 401);
    }

    // A request through the proxy, then the listing shows the app, instance and health.
    let out = curl(&pki, gw.addr, &name, &[]).await;
    assert!(out.status.success());
    let (code, body) = admin_curl(admin_addr, Some(token), "GET", "/v1/apps").await;
    assert_eq!(code, 200);
    let apps: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(apps[0]["app_id"], APP);
    assert_eq!(apps[0]["instances"][0]["instance_id"], I1);
    assert_eq!(apps[0]["instances"][0]["healthy"], true);
    assert_eq!(apps[0]["instances"][0]["drained"], false);

    // Drain: the only instance is drained, so the route is refused; undrain restores it.
    let (code, _) = admin_curl(
        admin_addr,
        Some(token),
        "POST",
        &format!("/v1/instances/{I1}/drain"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = admin_curl(
        admin_addr,
        Some(token),
        "POST",
        "/v1/instances/ffffffffffffffff/drain",
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let before = backend.accepted.load(Ordering::SeqCst);
    let out = curl(&pki, gw.addr, &name, &[]).await;
    assert!(!out.status.success());
    assert_eq!(backend.accepted.load(Ordering::SeqCst), before);
    let (_, body) = admin_curl(admin_addr, Some(token), "GET", "/v1/instances").await;
    assert!(body.contains("\"drained\":true"), "{body}");
    let (code, _) = admin_curl(
        admin_addr,
        Some(token),
        "POST",
        &format!("/v1/instances/{I1}/undrain"),
    )
    .await;
    assert_eq!(code, 200);
    assert!(curl(&pki, gw.addr, &name, &[]).await.status.success());

    // Metrics: connections, refusals, histograms, health.
    let (code, text) = admin_curl(admin_addr, Some(token), "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains(&format!(
            "tee_gateway_connections_total{{app=\"{APP}\",mode=\"terminate\"}} 2"
        )),
        "{text}"
    );
    assert!(
        text.contains("tee_gateway_refusals_total{reason=\"no_healthy_instance\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tee_gateway_tls_handshake_seconds_count 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tee_gateway_instance_healthy{{app=\"{APP}\",instance=\"{I1}\"}} 1"
        )),
        "{text}"
    );

    // Certificates: a broken file keeps the old certificate; a new one is picked up by the admin reload.
    assert_eq!(presented_cn(&pki, gw.addr, &name), "apps.test");
    let good_cert = std::fs::read(&cert_files.cert).unwrap();
    std::fs::write(&cert_files.cert, b"not a certificate").unwrap();
    let (code, body) = admin_curl(admin_addr, Some(token), "POST", "/v1/certificates/reload").await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(presented_cn(&pki, gw.addr, &name), "apps.test");
    std::fs::write(&cert_files.cert, good_cert).unwrap();
    let renewed = pki.issue("renewed", "renewed.apps.test", &["*.apps.test"]);
    std::fs::copy(&renewed.cert, &cert_files.cert).unwrap();
    std::fs::copy(&renewed.key, &cert_files.key).unwrap();
    let (code, body) = admin_curl(admin_addr, Some(token), "POST", "/v1/certificates/reload").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(presented_cn(&pki, gw.addr, &name), "renewed.apps.test");

    // And without the admin: the file watcher notices a change within its interval.
    let third = pki.issue("third", "third.apps.test", &["*.apps.test"]);
    std::fs::copy(&third.key, &cert_files.key).unwrap();
    std::fs::copy(&third.cert, &cert_files.cert).unwrap();
    let t0 = Instant::now();
    while presented_cn(&pki, gw.addr, &name) != "third.apps.test" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "certificate change not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.abort();
}

/// A Python helper from `tests/py/` running as a backend; killed on drop.
struct PyBackend {
    child: tokio::process::Child,
    port: u16,
}

impl PyBackend {
    async fn start(script: &str, args: &[&str]) -> PyBackend {
        use tokio::io::AsyncBufReadExt;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/").to_string() + script;
        let mut child = tokio::process::Command::new("python3")
            .arg(path)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("python backend did not start")
        .unwrap();
        PyBackend {
            child,
            port: line.trim().parse().unwrap(),
        }
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn python(script: &str, args: &[String]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/").to_string() + script;
    let out = tokio::process::Command::new("python3")
        .arg(path)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_calls_through_the_g_route() {
    let pki = Pki::new();
    let backend = PyBackend::start("grpc_backend.py", &[I1]).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", backend.port).parse().unwrap();
    let gw = Running::start(test_config(&pki), one_instance(addr, false)).await;
    let name = format!("{APP}-{}g.{BASE}", backend.port);
    let out = python(
        "grpc_client.py",
        &[gw.addr.to_string(), name, pki.ca_pem.display().to_string()],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("echo:hello from {I1}"));
    assert_eq!(
        &lines[1..],
        ["item-0", "item-1", "item-2", "item-3", "item-4"]
    );
    let metrics = gw.proxy.render_metrics();
    assert!(metrics.contains(&format!(
        "tee_gateway_connections_total{{app=\"{APP}\",mode=\"grpc\"}} 1"
    )));

    // The same port without `g` offers only http/1.1, which a gRPC client refuses to use.
    let plain = format!("{APP}-{}.{BASE}", backend.port);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc_client.py");
    let out = tokio::process::Command::new("python3")
        .args([
            path,
            &gw.addr.to_string(),
            &plain,
            &pki.ca_pem.display().to_string(),
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_exchange_both_ways_and_pings_outlive_the_idle_timeout() {
    let pki = Pki::new();
    let backend = PyBackend::start("ws_backend.py", &[]).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", backend.port).parse().unwrap();
    let mut config = test_config(&pki);
    config.idle_timeout_secs = 3;
    let gw = Running::start(config, one_instance(addr, false)).await;
    let name = format!("{APP}-{}.{BASE}", backend.port);
    let args = |idle: &str, ping: &str| {
        vec![
            "127.0.0.1".to_string(),
            gw.addr.port().to_string(),
            name.clone(),
            pki.ca_pem.display().to_string(),
            idle.to_string(),
            ping.to_string(),
        ]
    };
    // Idle three times the idle timeout, pings every second: the connection stays open.
    let (a, b) = (args("9", "1"), args("5", "0"));
    let with_pings = python("ws_client.py", &a);
    // Without pings the idle timeout closes it, so the test above can fail.
    let without = python("ws_client.py", &b);
    let (with_pings, without) = tokio::join!(with_pings, without);
    assert_eq!(with_pings.trim(), "ok");
    assert!(without.starts_with("closed"), "{without}");
}

/// The DER SubjectPublicKeyInfo of the certificate the proxy presents for `name`, read with openssl.
fn presented_spki(pki: &Pki, gw: std::net::SocketAddr, name: &str) -> Vec<u8> {
    let script = format!(
        "openssl s_client -connect {gw} -servername {name} -CAfile {} </dev/null 2>/dev/null \
         | openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER",
        pki.ca_pem.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success() && !out.stdout.is_empty());
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_name_serves_attestation_bound_to_the_tls_key() {
    use attestation::{Evidence, SimSnpAttester, SimSnpPki, TrustAnchors, Verifier};
    use base64::Engine;
    use gateway::proxy::self_attestation::{report_data_for, AttestationDocument};

    let pki = Pki::new();
    let sim = Arc::new(SimSnpPki::generate_small("tee-gateway proxy test").unwrap());
    let attester = Arc::new(SimSnpAttester::new(sim.clone(), [0x11; 48], [0x22; 32]));
    let backend = Backend::start(I1, BackendKind::Http).await;
    let gw = Running::start_with(
        test_config(&pki),
        one_instance(backend.addr, false),
        Some(attester),
    )
    .await;
    let name = format!("gateway.{BASE}");

    let out = curl(&pki, gw.addr, &name, &["--path-as-is"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url_out = {
        let url = format!("https://{name}:{}/v1/attestation", gw.addr.port());
        let resolve = format!("{name}:{}:127.0.0.1", gw.addr.port());
        tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&pki.ca_pem)
            .args(["--resolve", &resolve, &url])
            .output()
            .await
            .unwrap()
    };
    assert!(
        url_out.status.success(),
        "{}",
        String::from_utf8_lossy(&url_out.stderr)
    );
    let doc: AttestationDocument = serde_json::from_slice(&url_out.stdout).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&doc.evidence)
        .unwrap();
    let evidence = Evidence::decode(&doc.media_type, &bytes).unwrap();

    // The key of the TLS session, taken independently of the document, is the one the evidence binds.
    let spki = presented_spki(&pki, gw.addr, &name);
    assert_eq!(doc.public_key, hex::encode(&spki));
    let verifier = Verifier::new(
        TrustAnchors::production()
            .with_sim_snp_ark(sim.ark_der())
            .unwrap(),
    );
    let claims = verifier
        .verify(
            &evidence,
            &report_data_for(&spki),
            std::time::SystemTime::now(),
        )
        .unwrap();
    assert_eq!(claims.report_data, report_data_for(&spki));
    // Any other key does not match, and a verifier without the simulated root refuses the evidence.
    let mut other = spki.clone();
    *other.last_mut().unwrap() ^= 1;
    assert!(verifier
        .verify(
            &evidence,
            &report_data_for(&other),
            std::time::SystemTime::now()
        )
        .is_err());
    assert!(Verifier::new(TrustAnchors::production())
        .verify(
            &evidence,
            &report_data_for(&spki),
            std::time::SystemTime::now()
        )
        .is_err());
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        0,
        "the reserved name never reaches an app"
    );

    // A proxy without an attester refuses the reserved name.
    let plain = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let out = curl(&pki, plain.addr, &name, &[]).await;
    assert!(!out.status.success());
    assert_eq!(plain.refusals("gateway_endpoint_unavailable"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_start_refuses_an_admin_listener_without_token_and_stops_on_signal() {
    use gateway::proxy::server::Proxy;
    use gateway::proxy::service::{self, StartError};
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let mut config = test_config(&pki);
    config.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let build = |config| {
        Proxy::new(
            config,
            &[BASE.to_string()],
            Duration::from_secs(300),
            one_instance(backend.addr, false),
        )
        .unwrap()
    };
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let err = service::start(build(config.clone()), rx.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Admin(_)), "{err}");

    let token_file = pki.dir.path().join("admin-token");
    std::fs::write(&token_file, "  a-long-enough-admin-token\n").unwrap();
    config.admin.token_file = Some(token_file);
    let running = service::start(build(config), rx).await.unwrap();
    let admin = running.admin_addr.unwrap();
    let gw = running.client_addrs[0];
    let (code, _) = admin_curl(admin, Some("a-long-enough-admin-token"), "GET", "/metrics").await;
    assert_eq!(code, 200);
    let out = curl(
        &pki,
        gw,
        &format!("{APP}-{}.{BASE}", backend.addr.port()),
        &[],
    )
    .await;
    assert!(out.status.success());
    shutdown.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(gw).await.is_err());
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_without_a_recent_handshake_get_no_connections() {
    let pki = Pki::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.7:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fresh = Backend::start_on(&format!("127.0.0.7:{port}"), I1, BackendKind::Http).await;
    let stale = Backend::start_on(&format!("127.0.0.8:{port}"), I2, BackendKind::Http).await;
    let d = Arc::new(StaticDirectory::new());
    d.upsert(APP, I1, "127.0.0.7".parse().unwrap(), [(port, false)]);
    d.upsert(APP, I2, "127.0.0.8".parse().unwrap(), [(port, false)]);
    d.set_since_handshake(I2, Some(301)); // the window is 300 s
    let gw = Running::start(test_config(&pki), d.clone()).await;
    let name = format!("{APP}-{port}.{BASE}");
    let results = curl_many(&pki, gw.addr, &name, 30).await;
    assert!(results.iter().all(|(code, _)| *code == 200));
    assert_eq!(fresh.accepted.load(Ordering::SeqCst), 30);
    assert_eq!(stale.accepted.load(Ordering::SeqCst), 0);
    // Never handshaked either: no healthy instance, refused with a handshake_failure alert.
    d.set_since_handshake(I1, None);
    let mut s = connect(gw.addr).await;
    s.write_all(&records(&client_hello_message(Some(&name), 0), 16384))
        .await
        .unwrap();
    let (answer, _, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
    assert!(closed);
    assert_eq!(answer, alert(40));
    assert_eq!(gw.refusals("no_healthy_instance"), 1);
}
