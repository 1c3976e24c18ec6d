//! Every auth, scope, rate-limit, size and validation case, through the router without a
//! socket.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use mindbus::wire::ORCHESTRATOR_ROLE;

use crate::support::{ADMIN, ECHO, Gw, SLOW, get, json, post};

#[tokio::test]
async fn without_a_valid_key_every_api_route_is_401() {
    let gw = Gw::new("auth").await;
    for key in [None, Some("wrong-key")] {
        let response = gw
            .send(post(
                "/v1/roles/echo/commands",
                key,
                r#"{"type": "echo.say"}"#,
            ))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json(response).await["error"]["code"], "unauthorized");
        assert_eq!(
            gw.send(get("/v1/streams", key)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        gw.send(get("/healthz", None)).await.status(),
        StatusCode::OK
    );
    assert_eq!(gw.send(get("/readyz", None)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_is_held_to_its_roles_and_workflows() {
    let gw = Gw::new("scope").await;
    let ok = gw
        .send(post(
            "/v1/roles/echo/commands",
            Some(ECHO),
            r#"{"type": "echo.say"}"#,
        ))
        .await;
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    let other = gw
        .send(post(
            "/v1/roles/writer/commands",
            Some(ECHO),
            r#"{"type": "writer.draft"}"#,
        ))
        .await;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert!(
        json(other).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`writer`")
    );
    let run = gw
        .send(post("/v1/runs", Some(ECHO), r#"{"workflow": "article"}"#))
        .await;
    assert_eq!(run.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_whatever_the_headers_say() {
    let gw = Gw::new("rate").await;
    let body = r#"{"type": "echo.say"}"#;
    for _ in 0..2 {
        assert_eq!(
            gw.send(post("/v1/roles/echo/commands", Some(SLOW), body))
                .await
                .status(),
            StatusCode::ACCEPTED
        );
    }
    let mut forged = post("/v1/roles/echo/commands", Some(SLOW), body);
    forged
        .headers_mut()
        .insert("x-forwarded-for", "10.9.8.7".parse().unwrap());
    forged
        .headers_mut()
        .insert("forwarded", "for=10.9.8.6".parse().unwrap());
    let limited = gw.send(forged).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let other_key = gw
        .send(post("/v1/roles/echo/commands", Some(ADMIN), body))
        .await;
    assert_eq!(
        other_key.status(),
        StatusCode::ACCEPTED,
        "limits are per key"
    );
}

#[tokio::test]
async fn oversized_deep_and_malformed_bodies_are_refused_naming_the_problem() {
    let gw = Gw::new("bodies").await;
    let big = format!(r#"{{"type": "echo.say", "data": "{}"}}"#, "x".repeat(5000));
    let response = gw
        .send(post("/v1/roles/echo/commands", Some(ADMIN), &big))
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let deep = format!(
        r#"{{"type": "echo.say", "data": {}1{}}}"#,
        "[".repeat(10),
        "]".repeat(10)
    );
    let cases = [
        (deep.as_str(), "deeper than 8"),
        (r#"{"data": {}}"#, "missing field `type`"),
        (r#"{"type": 5}"#, "type:"),
        (
            r#"{"type": "echo.say", "maxattempts": "many"}"#,
            "maxattempts:",
        ),
        (
            r#"{"type": "echo.say", "maxattempts": 0}"#,
            "maxattempts: must be 1 to 1000",
        ),
        (
            r#"{"type": "echo.say", "attempt": 3}"#,
            "unknown field `attempt`",
        ),
        (
            r#"{"type": "echo.say", "id": "0192f1a0-0000-7000-8000-000000000001"}"#,
            "unknown field `id`",
        ),
        (
            r#"{"type": "echo.say", "source": "me"}"#,
            "unknown field `source`",
        ),
        ("{not json", "not valid JSON"),
    ];
    for (body, expected) in cases {
        let response = gw
            .send(post("/v1/roles/echo/commands", Some(ADMIN), body))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let message = json(response).await["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let bad_role = gw
        .send(post(
            "/v1/roles/Bad%20Role/commands",
            Some(ADMIN),
            r#"{"type": "a"}"#,
        ))
        .await;
    assert_eq!(bad_role.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad_id = gw.send(get("/v1/commands/bad%01id", Some(ADMIN))).await;
    assert_eq!(bad_id.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        gw.send(get("/nowhere", None)).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_command() {
    let gw = Gw::new("idem").await;
    let send = || {
        let mut request = post(
            "/v1/roles/echo/commands",
            Some(ADMIN),
            r#"{"type": "echo.say", "data": {"n": 1}}"#,
        );
        request
            .headers_mut()
            .insert("idempotency-key", "order-42".parse().unwrap());
        gw.send(request)
    };
    let first = json(send().await).await["id"].clone();
    let second = json(send().await).await["id"].clone();
    assert_eq!(first, second);
    let queued: usize = redis::cmd("XLEN")
        .arg(format!("{}:cmd:{{echo}}", gw.prefix))
        .query_async(
            &mut redis::Client::open(crate::support::redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(queued, 1, "one command published");
}

#[tokio::test]
async fn a_keys_tenant_goes_with_its_commands_and_runs() {
    let gw = Gw::new("tenant").await;
    let mut redis = redis::Client::open(crate::support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let body = r#"{"type": "echo.say", "data": {}}"#;
    for key in [ECHO, ADMIN] {
        let sent = gw
            .send(post("/v1/roles/echo/commands", Some(key), body))
            .await;
        assert_eq!(sent.status(), StatusCode::ACCEPTED);
    }
    let tenants: Vec<Option<String>> = entries(&mut redis, &format!("{}:cmd:{{echo}}", gw.prefix))
        .await
        .iter()
        .map(|fields| fields.get("tenant").cloned())
        .collect();
    assert_eq!(tenants, [Some("acme".to_owned()), None]);

    // No orchestrator answers here: the run.start it was sent is what matters.
    let start = gw.send(post(
        "/v1/runs",
        Some(ECHO),
        r#"{"workflow": "sample", "input": {}}"#,
    ));
    let stream = format!("{}:cmd:{{{ORCHESTRATOR_ROLE}}}", gw.prefix);
    let sent = tokio::select! {
        answer = start => panic!("answered with no orchestrator: {}", answer.status()),
        sent = first_entry(&stream) => sent,
    };
    assert_eq!(sent.get("type").map(String::as_str), Some("run.start"));
    assert_eq!(sent.get("tenant").map(String::as_str), Some("acme"));
}

/// A command goes on with the request's trace context: its `traceparent`, and its
/// `tracestate` as parsed when that is valid (an invalid one is dropped, not refused).
#[tokio::test]
async fn a_command_carries_the_requests_trace_context() {
    let gw = Gw::new("tracectx").await;
    let mut redis = redis::Client::open(crate::support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // The third passes on as parsed: its first member, not what follows 32 members.
    let padded = format!("k=v{}trailing junk", ",".repeat(40));
    for state in ["vendor=abc,other=1", "not a trace state!", &padded] {
        let mut request = post(
            "/v1/roles/echo/commands",
            Some(ADMIN),
            r#"{"type": "echo.say", "data": {}}"#,
        );
        let headers = request.headers_mut();
        headers.insert("traceparent", parent.parse().unwrap());
        headers.insert("tracestate", state.parse().unwrap());
        assert_eq!(gw.send(request).await.status(), StatusCode::ACCEPTED);
    }
    let sent = entries(&mut redis, &format!("{}:cmd:{{echo}}", gw.prefix)).await;
    let traces: Vec<(Option<&str>, Option<&str>)> = sent
        .iter()
        .map(|fields| {
            let field = |name: &str| fields.get(name).map(String::as_str);
            (field("traceparent"), field("tracestate"))
        })
        .collect();
    assert_eq!(
        traces,
        [
            (Some(parent), Some("vendor=abc,other=1")),
            (Some(parent), None),
            (Some(parent), Some("k=v"))
        ]
    );
}

/// The first entry of `stream`, waiting for it on a connection of its own.
async fn first_entry(stream: &str) -> std::collections::HashMap<String, String> {
    let mut redis = redis::Client::open(crate::support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(std::time::Duration::from_secs(10))),
        )
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(5000)
        .arg("STREAMS")
        .arg(stream)
        .arg("0-0")
        .query_async(&mut redis)
        .await
        .unwrap();
    entries(&mut redis, stream)
        .await
        .into_iter()
        .next()
        .expect("an entry within 5 s")
}

/// Every entry of `stream`, as field maps.
async fn entries(
    redis: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value(v).unwrap()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_committed_openapi_document_is_current() {
    let gw = Gw::new("openapi").await;
    let served = json(gw.send(get("/openapi.json", None)).await).await;
    let committed: serde_json::Value =
        serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    assert_eq!(
        served, committed,
        "gateway/openapi.json is stale: run `cargo run -p mindbus-gateway -- openapi > gateway/openapi.json`"
    );
}

/// `hash-key` reads the key from standard input, so it never shows on a command line.
#[test]
fn hash_key_reads_the_key_from_standard_input() {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mindbus-gateway"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        mindbus_gateway::auth::hash_key("s3cret")
    );
}

/// The gateway shows only the commands it published: a result on a reply stream of a
/// command it did not publish is not found, whatever the key.
#[tokio::test]
async fn a_result_of_a_command_the_gateway_did_not_publish_is_not_found() {
    let gw = Gw::new("norole").await;
    let id = mindbus::wire::MessageId::new();
    write_echo_result(&gw, &id, serde_json::json!({"secret": 1})).await;
    let uri = format!("/v1/commands/{id}");
    let scoped = gw.send(get(&uri, Some(ECHO))).await;
    assert_eq!(scoped.status(), StatusCode::NOT_FOUND);
    let admin = gw.send(get(&uri, Some(ADMIN))).await;
    assert_eq!(admin.status(), StatusCode::NOT_FOUND);
}

/// Metrics labels come from fixed sets: a client's invented methods and paths never become
/// series of their own.
#[tokio::test]
async fn invented_methods_and_paths_are_not_metric_labels() {
    let gw = Gw::new("labels").await;
    for i in 0..50 {
        let request = axum::http::Request::builder()
            .method(format!("INVENT{i}").as_str())
            .uri(format!("/nowhere/{i}"))
            .body(axum::body::Body::empty())
            .unwrap();
        gw.send(request).await;
    }
    let text = tower::ServiceExt::oneshot(gw.metrics.clone(), get("/metrics", None))
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(text.into_body(), 1 << 24)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        !text.contains("INVENT"),
        "an invented method became a label"
    );
    assert!(!text.contains("/nowhere/"), "a path became a label");
    assert!(text.contains("method=\"other\""), "{text}");
}

/// A command's event stream ends with its result when no `completed` event comes (agents
/// with `agent.events: failures` write none): the result is its last message.
#[tokio::test]
async fn a_command_event_stream_ends_with_the_result_when_no_event_ends_it() {
    let gw = Gw::new("sseresult").await;
    let id = send_echo(&gw).await;
    // What an agent writing no lifecycle events leaves: the result, on the reply stream.
    write_echo_result(&gw, &id, serde_json::json!({"n": 1})).await;
    let stream = gw
        .send(get(&format!("/v1/commands/{id}/events"), Some(ADMIN)))
        .await;
    assert_eq!(stream.status(), StatusCode::OK);
    let text = to_end(stream).await;
    assert!(text.contains("event: mindbus.result"), "{text}");
    assert!(text.contains(r#""status":"completed""#), "{text}");
}

/// A stream resumed after the command's `completed` event ends at once, even where the
/// result landed on the reply stream under a later entry id (the clock ticked between the
/// two writes): the client has had the command's last message.
#[tokio::test]
async fn a_command_event_stream_resumed_after_its_end_sends_nothing_more() {
    let gw = Gw::new("sseresume").await;
    let id = send_echo(&gw).await;
    let mut completed = mindbus::wire::Event::new(
        mindbus::wire::EventKind::Completed,
        "test",
        id.clone(),
        mindbus::wire::Payload::json(serde_json::json!({})),
    );
    completed.role = Some("echo".into());
    let fields = completed.encode().unwrap();
    let ended: mindbus::wire::EntryId = xadd(&format!("{}:event:{{echo}}", gw.prefix), "*", fields)
        .await
        .parse()
        .unwrap();
    let later = mindbus::wire::EntryId {
        ms: ended.ms + 1,
        seq: 0,
    };
    write_echo_result_at(&gw, &id, serde_json::json!({"n": 1}), &later.to_string()).await;
    let events = format!("/v1/commands/{id}/events");
    let mut resumed = get(&events, Some(ADMIN));
    resumed
        .headers_mut()
        .insert("last-event-id", ended.to_string().parse().unwrap());
    let text = to_end(gw.send(resumed).await).await;
    assert!(!text.contains("event:"), "nothing is sent again: {text}");
    // A stream from the start sends the event, and not the result it already stands for.
    let text = to_end(gw.send(get(&events, Some(ADMIN))).await).await;
    assert!(text.contains("event: mindbus.command.completed"), "{text}");
    assert!(!text.contains("event: mindbus.result"), "{text}");
}

/// A result whose entry id is smaller than a progress event's (the reply stream is new, the
/// event stream busy, in the same millisecond) is sent after the event under a larger id:
/// a client resuming after the event gets the result alone, one resuming after the result
/// gets nothing, and the stream ends either way.
#[tokio::test]
async fn a_result_with_a_smaller_entry_id_than_an_event_is_sent_last_and_once() {
    let gw = Gw::new("sseorder").await;
    let id = send_echo(&gw).await;
    let ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap();
    let mut progress = mindbus::wire::Event::new(
        mindbus::wire::EventKind::Progress,
        "test",
        id.clone(),
        mindbus::wire::Payload::json(serde_json::json!({"chunk": "hi"})),
    );
    progress.role = Some("echo".into());
    let event_id = format!("{ms}-5");
    let stream = format!("{}:event:{{echo}}", gw.prefix);
    xadd(&stream, &event_id, progress.encode().unwrap()).await;
    write_echo_result_at(&gw, &id, serde_json::json!({"n": 1}), &format!("{ms}-0")).await;
    let events = format!("/v1/commands/{id}/events");
    let resumed = |after: &str| {
        let mut request = get(&events, Some(ADMIN));
        request
            .headers_mut()
            .insert("last-event-id", after.parse().unwrap());
        async { to_end(gw.send(request).await).await }
    };

    let whole = to_end(gw.send(get(&events, Some(ADMIN))).await).await;
    let progress_at = whole.find("event: mindbus.command.progress").expect(&whole);
    let result_at = whole.find("event: mindbus.result").expect(&whole);
    assert!(progress_at < result_at, "{whole}");
    let result_id = format!("{ms}-6");
    assert!(whole.contains(&format!("id: {result_id}")), "{whole}");

    let after_event = resumed(&event_id).await;
    assert!(
        after_event.contains("event: mindbus.result"),
        "{after_event}"
    );
    assert!(
        !after_event.contains("mindbus.command.progress"),
        "{after_event}"
    );
    let after_result = resumed(&result_id).await;
    assert!(!after_result.contains("event:"), "{after_result}");
}

/// Sends an `echo.say` command as the admin key, returning its id.
async fn send_echo(gw: &Gw) -> mindbus::wire::MessageId {
    let sent = gw
        .send(post(
            "/v1/roles/echo/commands",
            Some(ADMIN),
            r#"{"type": "echo.say"}"#,
        ))
        .await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    json(sent).await["id"].as_str().unwrap().parse().unwrap()
}

/// The whole body of a response that must end within 20 s (an event stream that closes).
async fn to_end(response: Response<Body>) -> String {
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        axum::body::to_bytes(response.into_body(), 1 << 20),
    )
    .await
    .expect("the stream ends")
    .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Writes a completed result of echo command `id` to its reply stream, as an agent would.
async fn write_echo_result(gw: &Gw, id: &mindbus::wire::MessageId, data: serde_json::Value) {
    write_echo_result_at(gw, id, data, "*").await;
}

/// The same, under entry id `at`.
async fn write_echo_result_at(
    gw: &Gw,
    id: &mindbus::wire::MessageId,
    data: serde_json::Value,
    at: &str,
) {
    let result = mindbus::wire::CommandResult::new(
        id.clone(),
        mindbus::wire::Status::Completed,
        "test",
        mindbus::wire::Payload::json(data),
    );
    let fields = result.encode().unwrap();
    xadd(&format!("{}:reply:{{echo}}:{id}", gw.prefix), at, fields).await;
}

/// Adds an entry of `fields` to `stream` under id `at`, returning its id.
async fn xadd(stream: &str, at: &str, fields: mindbus::wire::Fields) -> String {
    let mut add = redis::cmd("XADD");
    add.arg(stream).arg(at);
    for (name, value) in fields {
        add.arg(name).arg(value);
    }
    let client = redis::Client::open(crate::testenv::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    add.query_async(&mut conn).await.unwrap()
}
