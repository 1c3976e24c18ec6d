//! `mindbus send ROLE TYPE DATA [--wait]`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use mindbus::bus::Bus;
use mindbus::wire::{Command, ContentType, Payload, Status};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The agent role, e.g. `echo`.
    role: String,
    /// The command type, e.g. `echo.say`.
    #[arg(name = "TYPE")]
    ty: String,
    /// The command's data, as JSON (checked before anything is sent).
    #[arg(value_parser = parse_json)]
    data: serde_json::Value,
    /// Wait for the result and print it; exit 1 unless it completed, 2 on timeout.
    #[arg(long, env = "MINDBUS_SEND_WAIT")]
    wait: bool,
    /// How long to wait, in milliseconds.
    #[arg(long, default_value_t = 30_000, env = "MINDBUS_SEND_WAIT_MS")]
    wait_ms: u64,
    /// Send `data` as MessagePack instead of JSON.
    #[arg(long, env = "MINDBUS_SEND_MSGPACK")]
    msgpack: bool,
    /// Deliveries before dead-lettering.
    #[arg(long, env = "MINDBUS_SEND_MAXATTEMPTS")]
    maxattempts: Option<u32>,
    /// Deadline, in milliseconds from now.
    #[arg(long, env = "MINDBUS_SEND_DEADLINE_MS")]
    deadline_ms: Option<u64>,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))
}

pub async fn run(bus: &Bus, args: SendArgs) -> anyhow::Result<()> {
    let value = args.data;
    let content_type = if args.msgpack {
        ContentType::MsgPack
    } else {
        ContentType::Json
    };
    let mut command = Command::new(
        &args.ty,
        Payload {
            content_type,
            value,
        },
    );
    command.envelope.source = "urn:mindbus:cli".into();
    command.maxattempts = args.maxattempts;
    command.deadline = args
        .deadline_ms
        .map(|ms| jiff::Timestamp::now() + Duration::from_millis(ms));
    let id = command.envelope.id.clone();
    if !args.wait {
        bus.publish(&args.role, &command)
            .await
            .context("publishing")?;
        println!("{id}");
        return Ok(());
    }
    let wait = bus.results().register(&args.role, &id).await?;
    bus.publish(&args.role, &command)
        .await
        .context("publishing")?;
    eprintln!("sent {id}; waiting for its result");
    let Some(result) = wait.wait(Duration::from_millis(args.wait_ms)).await else {
        eprintln!("no result for {id} within {} ms", args.wait_ms);
        mindbus::telemetry::exit(2);
    };
    println!("{}", serde_json::to_string_pretty(&result.to_json())?);
    if result.status != Status::Completed {
        mindbus::telemetry::exit(1);
    }
    Ok(())
}
