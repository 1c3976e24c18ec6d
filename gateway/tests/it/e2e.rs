//! Commands and runs over HTTP through real processes, with events over SSE.

use serde_json::{Value, json};

use mindbus_testkit::servers::PrivateCluster;

use crate::stack::{RUNS_PER_KEY, Stack, read_sse, read_sse_to_end};
use crate::support::{ADMIN, SAMPLE};

fn ended_with(kind: &'static str) -> impl Fn(&[crate::stack::Sse]) -> bool {
    move |events| events.last().is_some_and(|e| e.event == kind)
}

#[tokio::test]
async fn commands_get_results_from_either_gateway_and_chunks_over_sse() {
    commands_case(&Stack::up("commands").await).await;
}

/// The same on a Redis Cluster of three masters.
#[tokio::test]
async fn on_a_cluster_commands_get_results_and_chunks_over_sse() {
    let cluster = PrivateCluster::start(3);
    commands_case(&Stack::on(&cluster.url(), "cl_commands").await).await;
}

async fn commands_case(stack: &Stack) {
    let mut waits = Vec::new();
    for i in 0..20 {
        let request = stack
            .post(i % 2, "/v1/roles/echo/commands?wait_ms=15000")
            .json(&json!({"type": "echo.say", "data": {"i": i}}));
        waits.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    for (i, wait) in waits.into_iter().enumerate() {
        let response = wait.await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "gateway {} answered with the result",
            i % 2
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "completed");
        assert_eq!(body["result"]["data"]["i"], json!(i));
    }

    // A repeated request after the result came answers at once with the same command.
    let repeat = || {
        stack
            .post(1, "/v1/roles/echo/commands?wait_ms=15000")
            .header("idempotency-key", "repeat-1")
            .json(&json!({"type": "echo.say", "data": {"n": 1}}))
            .send()
    };
    let first: Value = repeat().await.unwrap().json().await.unwrap();
    let started = std::time::Instant::now();
    let second: Value = repeat().await.unwrap().json().await.unwrap();
    assert_eq!(
        (first["id"].clone(), second["status"].clone()),
        (second["id"].clone(), json!("completed"))
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "no waiting for a result that came"
    );

    let data = json!({"chunks": ["Once", " upon", " a time"], "sleep_ms": 200});
    let accepted = stack
        .post(0, "/v1/roles/echo/commands")
        .json(&json!({"type": "echo.tell", "data": data}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = read_sse(
        stack.get(1, &format!("/v1/commands/{id}/events")),
        // At the defaults agents write no `completed`: the result ends the stream.
        ended_with("mindbus.result"),
    )
    .await;
    let chunks: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "mindbus.command.progress")
        .filter_map(|e| e.data["data"]["chunk"].as_str())
        .collect();
    assert_eq!(chunks, ["Once", " upon", " a time"]);
    // The command is over: a new stream sends what there is and closes, and one resumed
    // after the last event (as a browser reconnects) closes at once.
    let path = format!("/v1/commands/{id}/events");
    let replay = read_sse_to_end(stack.get(0, &path)).await;
    assert_eq!(replay.last().unwrap().event, "mindbus.result");
    let last = replay.last().unwrap().id.clone();
    let resumed = read_sse_to_end(stack.get(1, &path).header("last-event-id", last)).await;
    assert!(resumed.is_empty(), "{resumed:?}");
    let shown: Value = stack
        .get(0, &format!("/v1/commands/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "completed");
}

#[tokio::test]
async fn a_run_over_http_and_a_resumed_event_stream_loses_nothing() {
    run_case(&Stack::up("runs").await).await;
}

/// The same on a Redis Cluster of three masters.
#[tokio::test]
async fn on_a_cluster_a_run_over_http_and_a_resumed_event_stream_loses_nothing() {
    let cluster = PrivateCluster::start(3);
    run_case(&Stack::on(&cluster.url(), "cl_runs").await).await;
}

async fn run_case(stack: &Stack) {
    let start = |workflow: &str| {
        stack
            .post(0, "/v1/runs")
            .header("idempotency-key", "run-1")
            .json(&json!({"workflow": workflow, "input": {"topic": "gateways"}}))
            .send()
    };
    let refused = start("no-such-workflow").await.unwrap();
    assert_eq!(refused.status(), 422);
    let message = refused.json::<Value>().await.unwrap()["error"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("no workflow `no-such-workflow`"),
        "{message}"
    );
    assert!(
        !message.as_str().unwrap().contains("sample"),
        "the refusal lists the workflows: {message}"
    );
    // The refused request did not keep the key: retrying it with a good body starts the run.
    let created = start("sample").await.unwrap();
    assert_eq!(created.status(), 201);
    let run = created.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/runs/{run}/events");
    let first = read_sse(stack.get(0, &path), |e| e.len() >= 3).await;
    let resumed = read_sse(
        stack.get(1, &path).header("last-event-id", &first[2].id),
        ended_with("mindbus.run.ended"),
    )
    .await;
    let whole = read_sse(stack.get(0, &path), ended_with("mindbus.run.ended")).await;
    let ids =
        |events: &[crate::stack::Sse]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let mut joined = ids(&first[..3]);
    joined.extend(ids(&resumed));
    assert_eq!(
        joined,
        ids(&whole),
        "the resumed stream continues exactly where the first stopped"
    );
    assert_eq!(whole.last().unwrap().data["data"]["status"], "completed");
    let shown: Value = stack
        .get(1, &format!("/v1/runs/{run}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["output"]["draft"], "A short piece on gateways");
    // One part a page at a time; a part that is not one is the client's error.
    let page: Value = stack
        .get(
            1,
            &format!("/v1/runs/{run}?part=steps.expand&offset=1&limit=1"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (page["total"].clone(), page["next"].clone()),
        (json!(3), json!(2)),
        "{page}"
    );
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let bad = stack
        .get(1, &format!("/v1/runs/{run}?part=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let again = stack
        .post(0, &format!("/v1/runs/{run}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "a finished run cannot be cancelled");
}

/// A key held to `sample` can neither see nor steer another workflow's run, and cannot tell
/// one from a run that does not exist; a key may have `runs_per_key` runs running at once;
/// a repeated start answers in the first answer's shape.
#[tokio::test]
async fn runs_hold_a_key_to_its_workflows_and_its_running_runs() {
    let stack = Stack::up("run_scope").await;
    let base = &stack.gateways[0];
    let start = |key: &str, workflow: &str| {
        stack
            .http
            .post(format!("{base}/v1/runs"))
            .bearer_auth(key)
            .json(&json!({"workflow": workflow, "input": {"topic": "scope"}}))
            .send()
    };
    let call = |key: &str, method: reqwest::Method, path: String| {
        stack
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(key)
            .json(&json!({"step": "draft"}))
            .send()
    };
    // No writer agent runs here: article runs stay running.
    let mut article = Vec::new();
    for _ in 0..RUNS_PER_KEY {
        let started = start(ADMIN, "article").await.unwrap();
        assert_eq!(started.status(), 201);
        let body: Value = started.json().await.unwrap();
        assert_eq!(body["status"], "running");
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        article.push(body["run_id"].as_str().unwrap().to_owned());
    }
    let over = start(ADMIN, "article").await.unwrap();
    assert_eq!(over.status(), 429);
    assert_eq!(
        over.json::<Value>().await.unwrap()["error"]["code"],
        "over_quota"
    );

    let missing = uuid::Uuid::now_v7().to_string();
    for (id, exists) in [(&article[0], true), (&missing, false)] {
        use reqwest::Method;
        for (method, path) in [
            (Method::GET, format!("/v1/runs/{id}")),
            (Method::GET, format!("/v1/runs/{id}/events")),
            (Method::POST, format!("/v1/runs/{id}/cancel")),
            (Method::POST, format!("/v1/runs/{id}/approve")),
        ] {
            let answer = call(SAMPLE, method, path.clone()).await.unwrap();
            assert_eq!(answer.status(), 404, "{path} (exists: {exists})");
            let body: Value = answer.json().await.unwrap();
            assert_eq!(body["error"]["message"], format!("no run {id}"), "{path}");
        }
    }
    let listed = |key: &'static str| {
        let list = stack
            .http
            .get(format!("{base}/v1/runs?limit=50"))
            .bearer_auth(key)
            .send();
        async move {
            let list: Value = list.await.unwrap().json().await.unwrap();
            list["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["workflow"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(
        listed(SAMPLE).await.is_empty(),
        "another workflow's runs listed"
    );
    assert_eq!(listed(ADMIN).await.len(), article.len());

    // Cancelling one frees its place.
    let path = format!("/v1/runs/{}/cancel", article[0]);
    assert_eq!(
        call(ADMIN, reqwest::Method::POST, path)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(start(ADMIN, "article").await.unwrap().status(), 201);

    // A repeated start answers as the first did: the run's id and status.
    let first_and_repeat = || {
        stack
            .http
            .post(format!("{base}/v1/runs"))
            .bearer_auth(SAMPLE)
            .header("idempotency-key", "once")
            .json(&json!({"workflow": "sample", "input": {"topic": "t"}}))
            .send()
    };
    let first: Value = first_and_repeat().await.unwrap().json().await.unwrap();
    let repeat: Value = first_and_repeat().await.unwrap().json().await.unwrap();
    assert_eq!(first["run_id"], repeat["run_id"]);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&first), keys(&repeat));

    // A key allowed only some roles still follows its run to the end: the run's own
    // transitions name no role.
    let events = stack
        .http
        .get(format!(
            "{base}/v1/runs/{}/events",
            first["run_id"].as_str().unwrap()
        ))
        .bearer_auth(SAMPLE);
    let events = read_sse(events, ended_with("mindbus.run.ended")).await;
    assert!(
        events.iter().any(|e| e.event == "mindbus.run.started"),
        "{events:?}"
    );
}
