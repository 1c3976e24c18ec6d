//! A hostile client holding a limited key: what it may not reach, what it may not learn,
//! and what it may not cost others, through the router without a socket.

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use mindbus_testkit::servers::{Persistence, PrivateRedis};
use serde_json::{Value, json};

use crate::support::{
    ADMIN, ECHO, ECHO_TWIN, Gw, REQUESTS_PER_KEY, SAMPLE, STREAMS_PER_KEY, get, json, post,
    redis_url,
};

async fn xlen(stream: &str) -> usize {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn with_idempotency(mut request: Request<Body>, key: &str) -> Request<Body> {
    request
        .headers_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

async fn send_command(gw: &Gw, key: &str, role: &str) -> String {
    let uri = format!("/v1/roles/{role}/commands");
    let sent = gw.send(post(&uri, Some(key), r#"{"type": "t"}"#)).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    json(sent).await["id"].as_str().unwrap().to_owned()
}

/// No key reaches the orchestrator's role as a command: its runs have their own routes,
/// which hold a key to its workflows and its limits.
#[tokio::test]
async fn the_orchestrators_role_takes_no_commands_over_http() {
    let gw = Gw::new("orch").await;
    for data in [
        json!({"workflow": "article", "input": {}}),
        json!({"status": "running"}),
    ] {
        for (key, ty) in [(SAMPLE, "run.start"), (ADMIN, "run.list")] {
            let body = json!({"type": ty, "data": data}).to_string();
            let sent = gw
                .send(post("/v1/roles/orchestrator/commands", Some(key), &body))
                .await;
            assert_eq!(sent.status(), StatusCode::FORBIDDEN);
            let message = json(sent).await["error"]["message"].clone();
            assert!(message.as_str().unwrap().contains("/v1/runs"), "{message}");
        }
    }
    assert_eq!(
        xlen(&format!("{}:cmd:{{orchestrator}}", gw.prefix)).await,
        0
    );
}

/// A command to a role no agent has started for is refused, naming the role.
#[tokio::test]
async fn a_role_no_agent_has_started_for_is_not_found() {
    let gw = Gw::new("ghost").await;
    let sent = gw
        .send(post(
            "/v1/roles/ghost/commands",
            Some(ADMIN),
            r#"{"type": "t"}"#,
        ))
        .await;
    assert_eq!(sent.status(), StatusCode::NOT_FOUND);
    let message = json(sent).await["error"]["message"].clone();
    assert!(message.as_str().unwrap().contains("`ghost`"), "{message}");
    assert_eq!(xlen(&format!("{}:cmd:{{ghost}}", gw.prefix)).await, 0);
}

/// An `Idempotency-Key` belongs to one API key (not to its name) and to one request: the
/// same key on another route or with another body is refused, not answered with the
/// first request's command.
#[tokio::test]
async fn an_idempotency_key_is_held_to_its_api_key_route_and_body() {
    let gw = Gw::new("idem-scope").await;
    let body = r#"{"type": "echo.say", "data": {"n": 1}}"#;
    let send = |key: &'static str, role: &str, body: &str| {
        let uri = format!("/v1/roles/{role}/commands");
        gw.send(with_idempotency(post(&uri, Some(key), body), "k"))
    };
    let first = send(ECHO, "echo", body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first = json(first).await["id"].clone();
    let replay = json(send(ECHO, "echo", body).await).await;
    assert_eq!(replay["id"], first, "a true repeat answers for the first");

    let other_body = send(ECHO, "echo", r#"{"type": "echo.shout", "data": {"n": 1}}"#).await;
    assert_eq!(other_body.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let message = json(other_body).await["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("Idempotency-Key"),
        "{message}"
    );

    let other_route = send(ADMIN, "writer", body).await;
    assert_eq!(other_route.status(), StatusCode::ACCEPTED);
    assert_ne!(
        json(other_route).await["id"],
        first,
        "another API key's slot"
    );
    let admin_echo = send(ADMIN, "echo", body).await;
    assert_eq!(
        admin_echo.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "the admin key used `k` for writer"
    );
    let twin = send(ECHO_TWIN, "echo", body).await;
    assert_eq!(twin.status(), StatusCode::ACCEPTED);
    assert_ne!(
        json(twin).await["id"],
        first,
        "keys named alike share nothing"
    );
    assert_eq!(xlen(&format!("{}:cmd:{{echo}}", gw.prefix)).await, 2);
}

/// A command id the gateway did not publish, or one of a role out of the key's scope, is
/// not found, whether shown or followed: nothing tells the two apart, and no event stream
/// is read for it.
#[tokio::test]
async fn unknown_and_out_of_scope_commands_are_not_found() {
    let gw = Gw::new("unknown").await;
    let writers = send_command(&gw, ADMIN, "writer").await;
    let echoes = send_command(&gw, ECHO, "echo").await;
    let never = mindbus::wire::MessageId::new().to_string();
    let zero = "00000000-0000-7000-8000-000000000000".to_owned();
    for (key, id, found) in [
        (ADMIN, &writers, true),
        (ECHO, &echoes, true),
        (ECHO, &writers, false),
        (ADMIN, &never, false),
        (ADMIN, &zero, false),
    ] {
        let shown = gw.send(get(&format!("/v1/commands/{id}"), Some(key))).await;
        let followed = gw
            .send(get(&format!("/v1/commands/{id}/events"), Some(key)))
            .await;
        if found {
            assert_eq!(shown.status(), StatusCode::OK);
            assert_eq!(json(shown).await["status"], "pending");
            assert_eq!(followed.status(), StatusCode::OK);
        } else {
            assert_eq!(shown.status(), StatusCode::NOT_FOUND, "{id}");
            assert_eq!(
                json(shown).await["error"]["message"],
                format!("no command {id}")
            );
            assert_eq!(followed.status(), StatusCode::NOT_FOUND, "{id}");
        }
    }
}

async fn follow(gw: &Gw, key: &str, id: &str) -> Response<Body> {
    gw.send(get(&format!("/v1/commands/{id}/events"), Some(key)))
        .await
}

/// One key cannot hold every event stream: past its own quota it gets 429, while other
/// keys still get theirs, and a stream it closes frees its place.
#[tokio::test]
async fn a_key_holds_at_most_its_own_event_streams() {
    let gw = Gw::new("quota").await;
    let id = send_command(&gw, ECHO, "echo").await;
    let mut held = Vec::new();
    for _ in 0..STREAMS_PER_KEY {
        let open = follow(&gw, ECHO, &id).await;
        assert_eq!(open.status(), StatusCode::OK);
        held.push(open);
    }
    let over = follow(&gw, ECHO, &id).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json(over).await["error"]["code"], "over_quota");
    let twin = follow(&gw, ECHO_TWIN, &id).await;
    assert_eq!(
        twin.status(),
        StatusCode::OK,
        "another key has its own quota"
    );
    held.pop();
    assert_eq!(follow(&gw, ECHO, &id).await.status(), StatusCode::OK);
}

/// A run's input may hold at most `max_run_items` array items (a workflow fans out over
/// them); a bigger one is refused before anything is sent.
#[tokio::test]
async fn a_run_input_past_the_item_limit_is_refused() {
    let gw = Gw::new("items").await;
    let points: Vec<usize> = (0..1_001).collect();
    let body = json!({"workflow": "sample", "input": {"points": points}}).to_string();
    let refused = gw.send(post("/v1/runs", Some(SAMPLE), &body)).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let message = json(refused).await["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("1001 array items"),
        "{message}"
    );
    assert_eq!(
        xlen(&format!("{}:cmd:{{orchestrator}}", gw.prefix)).await,
        0
    );
}

/// `/v1/roles` and `/v1/streams` read the registry of roles, never the keyspace: with many
/// other keys in Redis, a burst of calls runs no `SCAN`, and a stream no agent registered
/// is not listed.
#[tokio::test]
async fn the_mesh_views_read_the_registry_without_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateRedis::start(dir.path(), Persistence::None);
    let gw = Gw::on("registry", &server.url()).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("SET").arg(format!("other:{i}")).arg(i).ignore();
    }
    let ghost = format!("{}:cmd:{{ghost}}", gw.prefix);
    pipe.cmd("XADD")
        .arg(&ghost)
        .arg("*")
        .arg("type")
        .arg("t")
        .ignore();
    pipe.cmd("CONFIG").arg("RESETSTAT").ignore();
    pipe.query_async::<()>(&mut conn).await.unwrap();
    for _ in 0..20 {
        for uri in ["/v1/roles", "/v1/streams"] {
            assert_eq!(
                gw.send(get(uri, Some(ADMIN))).await.status(),
                StatusCode::OK
            );
        }
    }
    let roles = json(gw.send(get("/v1/roles", Some(ECHO))).await).await;
    let names: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"], "the key's registered roles only");
    let streams = json(gw.send(get("/v1/streams", Some(ADMIN))).await).await;
    assert!(
        !streams.to_string().contains("ghost"),
        "an unregistered stream is listed: {streams}"
    );
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!stats.contains("cmdstat_scan"), "{stats}");
    let infos = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_xinfo"))
        .unwrap_or_default()
        .to_owned();
    let calls: u64 = infos
        .split(['=', ','])
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Each overview reads the 4 streams of 2 registered roles, two XINFOs each (16 calls):
    // 41 requests without the cache would be 656.
    assert!(
        calls <= 4 * 16,
        "the overview was read more than a few times: {infos}"
    );
}

/// The metrics (which name keys and roles) are not served with the API.
#[tokio::test]
async fn metrics_are_served_apart_from_the_api() {
    let gw = Gw::new("metrics").await;
    let api = gw.send(get("/metrics", None)).await;
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let apart = tower::ServiceExt::oneshot(gw.metrics.clone(), get("/metrics", None))
        .await
        .unwrap();
    assert_eq!(apart.status(), StatusCode::OK);
    let text: Value = json(apart).await;
    assert!(
        text.as_str()
            .unwrap()
            .contains("mindbus_gateway_requests_total"),
        "{text}"
    );
}

/// One key cannot hold every connection with waiting requests: past its requests in
/// flight it gets 429 at once, while another key is served.
#[tokio::test]
async fn a_key_has_at_most_its_own_requests_in_flight() {
    let gw = Gw::new("in-flight").await;
    let body = r#"{"type": "echo.say"}"#;
    // No agent answers: each waits the whole second.
    let waiting = (0..REQUESTS_PER_KEY).map(|_| {
        gw.send(post(
            "/v1/roles/echo/commands?wait_ms=1000",
            Some(ECHO),
            body,
        ))
    });
    // Probes until the waiting requests hold every place (they hold them for a second).
    let over = async {
        loop {
            let probe = gw
                .send(post("/v1/roles/echo/commands", Some(ECHO), body))
                .await;
            if probe.status() != StatusCode::ACCEPTED {
                let other = gw
                    .send(post("/v1/roles/echo/commands", Some(ECHO_TWIN), body))
                    .await;
                break (probe, other);
            }
            tokio::task::yield_now().await;
        }
    };
    let (waited, (over, other)) = tokio::join!(futures::future::join_all(waiting), over);
    assert!(waited.iter().all(|r| r.status() == StatusCode::ACCEPTED));
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json(over).await["error"]["code"], "over_quota");
    assert_eq!(
        other.status(),
        StatusCode::ACCEPTED,
        "another key is served"
    );
    let after = gw
        .send(post("/v1/roles/echo/commands", Some(ECHO), body))
        .await;
    assert_eq!(after.status(), StatusCode::ACCEPTED, "the places come back");
}
