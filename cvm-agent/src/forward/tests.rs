//! Tests of the forwarder with fixed addresses and a fixed container view.

use tokio::net::{TcpListener, TcpStream};

use super::*;

#[tokio::test]
async fn an_attempt_to_a_container_that_goes_away_is_given_up_at_once() {
    // A "container" whose address never answers: a listener whose backlog is full drops further SYNs.
    let blackhole =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    blackhole
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    blackhole.listen(0).unwrap();
    let hole = blackhole.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    while let Ok(Ok(s)) =
        tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(hole)).await
    {
        fillers.push(s);
    }
    let container = crate::docker::Container {
        id: "c1".into(),
        name: "web-1".into(),
        labels: [(crate::target::SERVICE_LABEL.to_owned(), "web".to_owned())].into(),
        addresses: vec![hole.ip()],
    };
    let discovery = Discovery::fixed(vec![container]);
    let mut config = ForwardConfig::new(
        "127.0.0.1".parse().unwrap(),
        vec![PortRule {
            port: 0,
            target: format!("docker:web:{}", hole.port()).parse().unwrap(),
            proxy_protocol: false,
        }],
    );
    config.connect_timeout = Duration::from_secs(20);
    let fwd = Forwarder::start(config, Some(discovery.clone()))
        .await
        .unwrap();
    let mut c = TcpStream::connect(fwd.local_addrs()[0]).await.unwrap();
    // The forwarder is now trying the container; it stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = std::time::Instant::now();
    discovery.remove("c1");
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut c, &mut buf),
    )
    .await
    .expect("the connection was left hanging");
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "reset {:?} after the container went away",
        stopped.elapsed()
    );
}

#[tokio::test]
async fn fixed_address_ports_without_docker() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = backend.local_addr().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let rule = |target: String| PortRule {
        port: 0,
        target: target.parse().unwrap(),
        proxy_protocol: false,
    };
    // Docker targets need discovery.
    let err = Forwarder::start(
        ForwardConfig::new(
            "127.0.0.1".parse().unwrap(),
            vec![rule("docker:web:80".into())],
        ),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ForwardError::NoDiscovery { .. }));
    let fwd = Forwarder::start(
        ForwardConfig::new(
            "127.0.0.1".parse().unwrap(),
            vec![PortRule {
                port: 0,
                ..rule(up.to_string())
            }],
        ),
        None,
    )
    .await
    .unwrap();
    assert!(fwd.port_states().await[0].up);
    let fwd_closed = Forwarder::start(
        ForwardConfig::new("127.0.0.1".parse().unwrap(), vec![rule(closed.to_string())]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        fwd_closed.port_policies().await[0].target_state,
        Some(TargetState::Down)
    );
    // Bytes relay through to the fixed address.
    // (The state probe above also connected: echo on every connection.)
    let accept = tokio::spawn(async move {
        loop {
            let (mut s, _) = backend.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut c = TcpStream::connect(fwd.local_addrs()[0]).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut c, b"hello")
        .await
        .unwrap();
    let mut buf = [0u8; 5];
    tokio::io::AsyncReadExt::read_exact(&mut c, &mut buf)
        .await
        .unwrap();
    assert_eq!(&buf, b"hello");
    accept.abort();
    // A target that refuses: once its first probe (or a forwarded connection) found it down, connection
    // attempts are refused; one accepted before that gets a reset, never a hang.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(fwd_closed.local_addrs()[0]).await {
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                break;
            }
            Ok(mut c) => {
                let mut buf = [0u8; 1];
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::io::AsyncReadExt::read(&mut c, &mut buf),
                )
                .await
                .unwrap();
                assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
            }
        }
        assert!(std::time::Instant::now() < deadline, "still accepting");
    }
}
