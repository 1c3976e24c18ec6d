//! A hostile client against a real listening gateway: headers trickled slowly, more idle
//! connections than the gateway will hold, and an event stream nobody reads leave it
//! answering everyone else.

use std::time::Duration;

use mindbus_testkit::binary;
use mindbus_testkit::servers::free_port;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::support::ADMIN;
use crate::testenv::{eventually, redis_url, unique};

/// A gateway on `prefix` holding at most 50 connections, cutting off headers, and writes
/// nobody takes, after one second, and one event stream per key.
async fn gateway_on(prefix: &str) -> (Child, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(binary("mindbus-gateway"))
        .args(["--listen", &address, "--redis-url", &redis_url()])
        .args(["--prefix", prefix])
        .env("MINDBUS_GATEWAY_API_KEY", ADMIN)
        .env("MINDBUS_GATEWAY__MAX_CONNECTIONS", "50")
        .env("MINDBUS_GATEWAY__METRICS_LISTEN", "127.0.0.1:0")
        .env("MINDBUS_GATEWAY__HEADER_TIMEOUT_MS", "1000")
        .env("MINDBUS_GATEWAY__WRITE_TIMEOUT_MS", "1000")
        .env("MINDBUS_GATEWAY__STREAMS_PER_KEY", "1")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{address}");
    let what = format!("{base} did not answer");
    eventually(Duration::from_secs(10), &what, || async {
        let answer = reqwest::get(format!("{base}/healthz")).await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
    (child, address)
}

async fn gateway() -> (Child, String) {
    gateway_on(&unique("t-gw-conn")).await
}

/// A client that sends one header line every 300 ms is cut off about a second in.
#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let (_gateway, address) = gateway().await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream
            .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(10), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // A 408 (or any answer) before closing is as good.
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "the connection stayed open for 6 s of trickled headers"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// Six times more idle connections than the gateway holds: it still answers `/healthz`
/// within a few seconds, the extra ones closed at once and the idle ones after the header
/// timeout.
#[tokio::test]
async fn idle_connections_past_the_limit_do_not_take_the_gateway() {
    let (_gateway, address) = gateway().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = TcpStream::connect(&address).await {
            idle.push(stream);
        }
    }
    let base = format!("http://{address}");
    let what = "/healthz did not answer while idle connections were held";
    eventually(Duration::from_secs(5), what, || async {
        let answer = reqwest::get(format!("{base}/healthz")).await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
    drop(idle);
}

/// A client that opens a command's event stream and stops reading loses it once the
/// gateway has waited a write timeout for it to take more: its key's one stream is free
/// again.
#[tokio::test]
async fn a_client_that_stops_reading_loses_its_event_stream() {
    let prefix = unique("t-gw-stall");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = mindbus::keys::Keys::new(prefix.clone());
    mindbus::streams::ensure_role(&mut conn, &keys, "echo")
        .await
        .unwrap();
    let (_gateway, address) = gateway_on(&prefix).await;
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    let sent: serde_json::Value = http
        .post(format!("{base}/v1/roles/echo/commands"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"type": "echo.say"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id: mindbus::wire::MessageId = sent["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/v1/commands/{id}/events");

    // The stalled reader: a small receive buffer, a request, and never a read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(address.parse().unwrap()).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n\r\n");
    stalled.write_all(request.as_bytes()).await.unwrap();
    // Its headers, read only so the stream is known to be open.
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut byte));
        assert_eq!(read.await.unwrap().unwrap(), 1, "the stream closed at once");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let follow = || http.get(format!("{base}{path}")).bearer_auth(ADMIN).send();
    assert_eq!(follow().await.unwrap().status(), 429, "one stream per key");

    // Far more progress than the socket buffers hold.
    let text = "x".repeat(64 * 1024);
    let mut pipe = redis::pipe();
    for _ in 0..200 {
        let event = mindbus::wire::Event::new(
            mindbus::wire::EventKind::Progress,
            "test",
            id.clone(),
            mindbus::wire::Payload::json(serde_json::json!({"text": text})),
        );
        let add = pipe.cmd("XADD").arg(keys.events("echo")).arg("*");
        for (name, value) in event.encode().unwrap() {
            add.arg(name).arg(value);
        }
        add.ignore();
    }
    pipe.query_async::<()>(&mut conn).await.unwrap();

    let what = "the stalled stream still holds the key's one stream";
    eventually(Duration::from_secs(20), what, || async {
        let answer = follow().await.ok()?;
        (answer.status() == 200).then_some(())
    })
    .await;
    drop(stalled);
    crate::testenv::delete_prefix(&prefix);
}
