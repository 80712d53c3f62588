//! Drives the test server binary with real clients (curl, Python `grpcio` and `websockets`, raw TCP) on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::process::{first_line, Process};

/// The server process, killed on drop (also when a test fails).
struct Server {
    _process: Process,
    http: SocketAddr,
    tls: SocketAddr,
    echo: SocketAddr,
}

fn start(name: &str) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testserver"));
    cmd.args([
        "--http",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--echo",
        "127.0.0.1:0",
    ])
    .args(["--name", name])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut process = Process::spawn(cmd).unwrap();
    let stdout = process.child_mut().stdout.take().unwrap();
    let line = first_line(stdout, Duration::from_secs(20)).unwrap();
    let field = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
            .parse()
            .unwrap()
    };
    Server {
        http: field("http"),
        tls: field("tls"),
        echo: field("echo"),
        _process: process,
    }
}

/// Runs `curl -sS --max-time 5 ARGS`: (success, stdout, stderr).
fn curl(args: &[&str]) -> (bool, String, String) {
    run(Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args))
}

/// Runs the repository's client script `scripts/clients/SCRIPT` with `args`: (success, stdout, stderr).
fn client(script: &str, args: &[&str]) -> (bool, String, String) {
    let script = test_support::binaries::repo_file(&format!("scripts/clients/{script}"));
    run(Command::new("python3").arg(script).args(args))
}

/// Runs `cmd` to completion: (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = test_support::process::run(cmd);
    (out.success(), out.stdout, out.stderr)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn http1_h2c_and_tls_echo_name_the_server() {
    let s = start("ts-http");
    let url = format!("http://{}/a?b=1", s.http);
    let (ok, out, err) = curl(&["-d", "payload", &url]);
    assert!(ok, "{err}");
    let v = json(&out);
    assert_eq!(v["server"], "ts-http");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/a?b=1");
    assert_eq!(v["body"], "payload");
    assert_eq!(v["version"], "HTTP/1.1");

    let (ok, out, err) = curl(&["--http2-prior-knowledge", &url]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["version"], "HTTP/2.0");

    // TLS, trusting the certificate the plain port hands out; the name must match (localhost).
    let (ok, pem, err) = curl(&[&format!("http://{}/cert.pem", s.http)]);
    assert!(ok, "{err}");
    let dir = std::env::temp_dir().join(format!("testserver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let resolve = format!("localhost:{}:127.0.0.1", s.tls.port());
    let tls_url = format!("https://localhost:{}/t", s.tls.port());
    let ca_arg = ca.display().to_string();
    let (ok, out, err) = curl(&["--cacert", &ca_arg, "--resolve", &resolve, &tls_url]);
    assert!(ok, "{err}");
    let v = json(&out);
    assert_eq!(v["tls"], true);
    assert_eq!(v["alpn"], "h2");
    assert_eq!(v["server"], "ts-http");
    // The same request against another name must fail verification: the certificate is really checked.
    let resolve_bad = format!("other.example:{}:127.0.0.1", s.tls.port());
    let bad_url = format!("https://other.example:{}/t", s.tls.port());
    let (ok, _, _) = curl(&["--cacert", &ca_arg, "--resolve", &resolve_bad, &bad_url]);
    assert!(!ok, "a certificate for another name was accepted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn grpc_unary_stream_and_errors_with_grpcio() {
    let s = start("ts-grpc");
    let target = s.http.to_string();
    let (ok, out, err) = client("grpc_echo.py", &[&target, "unary", "hello"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ts-grpc hello");
    let (ok, out, err) = client("grpc_echo.py", &[&target, "stream", "4", "5"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["ts-grpc 0", "ts-grpc 1", "ts-grpc 2", "ts-grpc 3"]
    );
    let (ok, _, err) = client("grpc_echo.py", &[&target, "stream", "many"]);
    assert!(!ok);
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
}

#[test]
fn grpc_unknown_method_is_unimplemented() {
    let s = start("ts-grpc2");
    let script = r#"
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
call = ch.unary_unary("/testserver.Echo/Nope", request_serializer=lambda b: b, response_deserializer=lambda b: b)
try:
    call(b"x", timeout=5)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name)
"#;
    let (ok, out, err) = run(Command::new("python3").args(["-c", script, &s.http.to_string()]));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "UNIMPLEMENTED");
}

#[test]
fn websocket_echo_with_python_websockets() {
    let s = start("ts-ws");
    let (ok, out, err) = client(
        "ws_echo.py",
        &[&format!("ws://{}/ws", s.http), "one", "two"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ts-ws");
    let (ok, out, err) = client(
        "ws_echo.py",
        &[&format!("wss://{}/ws", s.tls), "over-tls", "--insecure"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ts-ws");
    // A wrong protocol version is refused.
    let (ok, out, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 8",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        &format!("http://{}/ws", s.http),
    ]);
    assert!(ok);
    assert_eq!(out, "400");
}

fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(data).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn proxy_header_is_reported_and_raw_echo_is_exact() {
    let s = start("ts-proxy");
    let out = exchange(
        s.http,
        b"PROXY TCP4 198.18.0.9 198.18.0.2 40000 80\r\nGET /p HTTP/1.0\r\n\r\n",
    );
    let text = String::from_utf8(out).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let v = json(body);
    assert_eq!(v["proxy"]["version"], 1);
    assert_eq!(v["proxy"]["source"], "198.18.0.9:40000");

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 10, 0, 0, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 80,
    ]);
    v2.extend_from_slice(b"GET /p HTTP/1.0\r\n\r\n");
    let text = String::from_utf8(exchange(s.http, &v2)).unwrap();
    let v = json(text.split("\r\n\r\n").nth(1).unwrap());
    assert_eq!(v["proxy"]["version"], 2);
    assert_eq!(v["proxy"]["source"], "10.0.0.7:40000");

    // A broken header closes the connection without an answer.
    assert!(exchange(s.http, b"PROXY TCP4 nonsense\r\nGET / HTTP/1.0\r\n\r\n").is_empty());

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(exchange(s.echo, &payload), payload);
}

#[test]
fn sse_and_bulk_payload() {
    let s = start("ts-sse");
    let (ok, out, err) = curl(&["-N", &format!("http://{}/sse?n=3&interval_ms=10", s.http)]);
    assert!(ok, "{err}");
    let data: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data, ["ts-sse 0", "ts-sse 1", "ts-sse 2"]);
    // `curl -o /dev/null -w FORMAT URL`: only what the format writes.
    let written = |format: &str, path: &str| {
        let url = format!("http://{}{path}", s.http);
        curl(&["-o", "/dev/null", "-w", format, &url])
    };
    let (ok, out, err) = written("%{size_download} %{http_code}", "/bytes/1000000");
    assert!(ok, "{err}");
    assert_eq!(out, "1000000 200");
    let (_, out, _) = written("%{http_code}", "/bytes/lots");
    assert_eq!(out, "400");
}
