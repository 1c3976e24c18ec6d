//! `mindbus run WORKFLOW` and `mindbus runs list|show|cancel|approve`: workflow runs, steered
//! through the orchestrator's command stream (no database access needed here).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mindbus::bus::{Bus, Follower};
use mindbus::wire::{
    Approval, CommandResult, Event, EventKind, GetRun, ListRuns, ORCHESTRATOR_ROLE, Origin,
    PartPage, RunChange, RunEnded, RunEventKind, RunPartPage, RunRef, RunRequest, RunStatus,
    RunStep, StartRun, Status, TextChunk,
};
use serde_json::Value;
use uuid::Uuid;

/// How long the orchestrator has to answer a run command.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow's name, e.g. `sample`.
    workflow: String,
    /// The run's input, as a JSON object.
    #[arg(long, default_value = "{}", env = "MINDBUS_RUN_INPUT")]
    input: String,
    /// Print the run id and return at once instead of following the run.
    #[arg(long, env = "MINDBUS_RUN_DETACH")]
    detach: bool,
    /// Longest time to follow the run, in milliseconds; exit 2 when it runs out.
    #[arg(long, default_value_t = 3_600_000, env = "MINDBUS_RUN_WAIT_MS")]
    wait_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recent runs.
    List {
        /// Only runs in this status (running, completed, failed, canceled).
        #[arg(long, env = "MINDBUS_RUNS_STATUS")]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20, env = "MINDBUS_RUNS_LIMIT")]
        limit: u32,
        /// The `next` a page before ended with.
        #[arg(long)]
        after: Option<String>,
    },
    /// One run's status, output and steps (values over 64 KiB left out), or one part of it
    /// whole (`--part`).
    Show {
        run_id: Uuid,
        /// `input`, `output` or `steps.<id>`: printed whole, however big, read a page at a
        /// time.
        #[arg(long)]
        part: Option<String>,
    },
    /// Stop a run and cancel its running commands.
    Cancel { run_id: Uuid },
    /// Approve (or `--reject`) a run's approval step.
    Approve {
        run_id: Uuid,
        step: String,
        #[arg(long)]
        reject: bool,
    },
}

/// Starts a run and follows it to its end: step changes on stderr, the output on stdout.
/// Exits 1 when the run did not complete, 2 when the wait ran out.
pub async fn run(bus: &Bus, args: RunArgs) -> anyhow::Result<()> {
    let input: Value = serde_json::from_str(&args.input).context("--input is not valid JSON")?;
    // The run's own events, and its steps' (streamed text included) on every role's stream.
    let mut streams = vec![bus.keys().events(ORCHESTRATOR_ROLE)];
    for role in mindbus::streams::roles(&mut bus.connection(), bus.keys()).await? {
        if role != ORCHESTRATOR_ROLE {
            streams.push(bus.keys().events(&role));
        }
    }
    let mut follower = Follower::new(bus.redis(), streams, false, Duration::from_secs(1))
        .await
        .context("following events")?;
    let start = StartRun {
        workflow: args.workflow,
        input,
        owner: None,
        max_running: None,
    };
    let answer = ask(bus, RunRequest::Start(start)).await?;
    let RunChange { run_id, .. } =
        serde_json::from_value(answer).context("the orchestrator's answer to run.start")?;
    if args.detach {
        println!("{run_id}");
        return Ok(());
    }
    eprintln!("run {run_id} started; following it (Ctrl-C stops following, not the run)");
    let until = tokio::time::Instant::now() + Duration::from_millis(args.wait_ms);
    while tokio::time::Instant::now() < until {
        for (stream, entry) in follower.next().await? {
            let Some(fields) = entry.fields else { continue };
            let origin = Origin {
                stream: &stream,
                entry: entry.id,
            };
            let Ok(event) = Event::decode(fields, origin) else {
                continue;
            };
            if event.runid.as_deref() != Some(run_id.to_string().as_str()) {
                continue;
            }
            show_chunk(&event);
            if let Some(ended) = show_event(&event)? {
                if ended.output_truncated {
                    // Too big for the event: the run has it whole.
                    let output = part(bus, run_id, "output").await?;
                    println!("{}", serde_json::to_string_pretty(&output)?);
                }
                show_usage(bus, &run_id).await;
                mindbus::telemetry::exit(if ended.status == RunStatus::Completed {
                    0
                } else {
                    1
                });
            }
        }
    }
    eprintln!(
        "the run is still going after {} ms; see `mindbus runs show {run_id}`",
        args.wait_ms
    );
    mindbus::telemetry::exit(2)
}

/// Streams an LLM role's text to stderr as it is generated.
fn show_chunk(event: &Event) {
    if event.kind() != Some(EventKind::Progress) {
        return;
    }
    if let Ok(text) = serde_json::from_value::<TextChunk>(event.envelope.data.value.clone()) {
        eprint!("{}", text.chunk);
        MID_LINE.store(true, Ordering::Relaxed);
    }
}

/// Whether streamed text left the cursor mid-line.
static MID_LINE: AtomicBool = AtomicBool::new(false);

/// Ends a line of streamed text before other output.
fn end_line() {
    if MID_LINE.swap(false, Ordering::Relaxed) {
        eprintln!();
    }
}

/// Prints the run's LLM usage, when its roles recorded any.
async fn show_usage(bus: &Bus, run_id: &Uuid) {
    let totals: Result<std::collections::HashMap<String, u64>, _> = redis::cmd("HGETALL")
        .arg(bus.keys().run_usage(&run_id.to_string()))
        .query_async(&mut bus.connection())
        .await;
    let Ok(totals) = totals else { return };
    if let Some(calls) = totals.get("calls") {
        let get = |name: &str| totals.get(name).copied().unwrap_or(0);
        eprintln!(
            "llm usage: {calls} calls, {} tokens in, {} tokens out, ${:.6}",
            get("tokens_in"),
            get("tokens_out"),
            get("cost_micros") as f64 / 1e6
        );
    }
}

/// Prints one run event; the run's end when it ended.
fn show_event(event: &Event) -> anyhow::Result<Option<RunEnded>> {
    let data = &event.envelope.data.value;
    let kind = event.envelope.ty.parse::<RunEventKind>();
    if kind.is_ok() {
        end_line();
    }
    match kind {
        Ok(RunEventKind::Step) => {
            let news: RunStep = serde_json::from_value(data.clone()).context("a run.step event")?;
            let round = news
                .view
                .round
                .map(|r| format!(" (round {r})"))
                .unwrap_or_default();
            eprintln!("step {}: {}{round}", news.step, news.view.state);
            Ok(None)
        }
        Ok(RunEventKind::Ended) => {
            let ended: RunEnded =
                serde_json::from_value(data.clone()).context("a run.ended event")?;
            eprintln!("run {}", ended.status);
            if ended.status != RunStatus::Completed {
                eprintln!("{}", ended.error.as_deref().unwrap_or(""));
            } else if !ended.output_truncated {
                println!("{}", serde_json::to_string_pretty(&ended.output)?);
            }
            Ok(Some(ended))
        }
        _ => Ok(None),
    }
}

/// One part of a run (`input`, `output`, `steps.<id>`) whole: a list read a page at a time.
async fn part(bus: &Bus, run_id: Uuid, part: &str) -> anyhow::Result<Value> {
    let mut items = Vec::new();
    let mut offset = Some(0);
    while let Some(from) = offset {
        let get = GetRun {
            run_id,
            workflows: None,
            part: Some(part.to_owned()),
            offset: from,
            limit: Some(1000),
        };
        let answer = ask(bus, RunRequest::Get(get)).await?;
        let page: RunPartPage =
            serde_json::from_value(answer).context("the orchestrator's answer to run.get")?;
        match page.page {
            PartPage::Whole { value } => return Ok(value),
            PartPage::Items {
                items: more, next, ..
            } => {
                items.extend(more);
                offset = next;
            }
        }
    }
    Ok(Value::Array(items))
}

pub async fn runs(bus: &Bus, command: RunsCommand) -> anyhow::Result<()> {
    let request = match command {
        RunsCommand::List {
            status,
            limit,
            after,
        } => RunRequest::List(ListRuns {
            status,
            limit: Some(limit.into()),
            workflows: None,
            after,
        }),
        RunsCommand::Show {
            run_id,
            part: Some(name),
        } => {
            let value = part(bus, run_id, &name).await?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
        RunsCommand::Show { run_id, part: None } => RunRequest::Get(GetRun {
            run_id,
            workflows: None,
            part: None,
            offset: 0,
            limit: None,
        }),
        RunsCommand::Cancel { run_id } => RunRequest::Cancel(RunRef {
            run_id,
            workflows: None,
        }),
        RunsCommand::Approve {
            run_id,
            step,
            reject,
        } => RunRequest::Approve(Approval {
            run_id,
            workflows: None,
            step,
            approved: !reject,
        }),
    };
    let answer = ask(bus, request).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// Sends a run command to the orchestrator and returns its answer; a failure is printed and
/// exits 1.
async fn ask(bus: &Bus, request: RunRequest) -> anyhow::Result<Value> {
    let mut command = request.to_command();
    command.envelope.source = "urn:mindbus:cli".into();
    let Some(result) = bus
        .call(ORCHESTRATOR_ROLE, command, ANSWER_WITHIN)
        .await
        .context("sending to the orchestrator")?
    else {
        anyhow::bail!(
            "no orchestrator answered within {} s (is mindbus-orchestrator running?)",
            ANSWER_WITHIN.as_secs()
        );
    };
    failed(&result)?;
    Ok(result.envelope.data.value)
}

fn failed(result: &CommandResult) -> anyhow::Result<()> {
    if result.status == Status::Completed {
        return Ok(());
    }
    let why = result
        .failure
        .as_ref()
        .map_or(String::new(), |f| format!("{}: {}", f.errortype, f.error));
    eprintln!("the orchestrator refused: {why}");
    mindbus::telemetry::exit(1)
}
