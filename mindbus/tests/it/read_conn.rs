//! The agent's read connection against a private `redis-server` with a password: it
//! authenticates, selects the URL's database, reads entries, and keeps `NOGROUP`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mindbus::streams::{Redis, is_nogroup};
use mindbus_testkit::servers::free_port;
use secrecy::SecretString;

struct PrivateRedis(Child);

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(port: u16) -> PrivateRedis {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "s3cret",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    PrivateRedis(child)
}

async fn connected(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    let what = "private redis-server did not start";
    mindbus_testkit::testenv::eventually(Duration::from_secs(5), what, || async {
        client.get_multiplexed_async_connection().await.ok()
    })
    .await
}

fn read(count: usize, block_ms: Option<u64>) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg("g").arg("c").arg("COUNT").arg(count);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg("s").arg(">");
    cmd
}

#[tokio::test]
async fn reads_entries_from_the_urls_database_after_authenticating() {
    let port = free_port();
    let _server = start(port);
    let url = format!("redis://:s3cret@127.0.0.1:{port}/2");
    let mut conn = connected(&url).await;
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "s", "g", "0", "MKSTREAM"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let id: String = redis::cmd("XADD")
        .arg(&["s", "*", "type", "echo.say", "data", "{}"][..])
        .query_async(&mut conn)
        .await
        .unwrap();

    let redis = Redis::open(&SecretString::from(url)).unwrap();
    let mut reader = redis
        .read_connection("s", Duration::from_millis(100))
        .await
        .unwrap();
    let mut streams = reader.read_streams(&read(10, None)).await.unwrap();
    let (stream, entries) = streams.pop().unwrap();
    assert_eq!(stream, "s");
    assert_eq!(entries.len(), 1, "the entry is in database 2 only");
    assert_eq!(entries[0].id.to_string(), id);
    let fields = entries[0].fields.clone().unwrap();
    assert_eq!(fields[0], ("type".to_owned(), b"echo.say".to_vec()));

    let none = reader.read_streams(&read(10, Some(100))).await.unwrap();
    assert!(none.is_empty(), "a blocked read that times out is empty");

    let _: () = redis::cmd("XGROUP")
        .arg(&["DESTROY", "s", "g"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = reader.read_streams(&read(10, None)).await.unwrap_err();
    assert!(is_nogroup(&err), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let port = free_port();
    let _server = start(port);
    let _ = connected(&format!("redis://:s3cret@127.0.0.1:{port}")).await;
    let redis = Redis::open(&SecretString::from(format!(
        "redis://:wrong@127.0.0.1:{port}"
    )))
    .unwrap();
    let err = redis
        .read_connection("s", Duration::from_millis(100))
        .await
        .unwrap_err();
    // Refused, not unreachable: the server's own words, or redis-rs's when the first
    // connection to a server (asking what it is) is refused.
    let text = err.to_string();
    assert!(
        text.contains("WRONGPASS") || text.contains("authentication failed"),
        "{err}"
    );
    assert!(!text.contains("cannot reach"), "{err}");
}
