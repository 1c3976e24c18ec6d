//! A hostile client against a real listening gateway: headers trickled slowly, and more
//! idle connections than the gateway will hold, leave it answering everyone else.

use std::time::Duration;

use mindbus_testkit::binary;
use mindbus_testkit::servers::free_port;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::testenv::{eventually, redis_url, unique};

/// A gateway holding at most 50 connections, cutting off headers after one second.
async fn gateway() -> (Child, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(binary("mindbus-gateway"))
        .args(["--listen", &address, "--redis-url", &redis_url()])
        .args(["--prefix", &unique("t-gw-conn")])
        .env("MINDBUS_GATEWAY__MAX_CONNECTIONS", "50")
        .env("MINDBUS_GATEWAY__HEADER_TIMEOUT_MS", "1000")
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
