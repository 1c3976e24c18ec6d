//! `mindbus dlq list|show|retry|drop`: inspect dead letters and send them back.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use comfy_table::Table;
use mindbus::bus::Bus;
use mindbus::keys::Keys;
use mindbus::streams::{StreamEntry, parse_read};
use mindbus::wire::{DeadLetter, EntryId, Fields, Origin, derived_id};
use redis::Value;

use super::show::raw;

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// Only this role's dead letters (default: every role's).
    #[arg(long, global = true, env = "MINDBUS_DLQ_ROLE")]
    role: Option<String>,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first, role by role.
    List {
        /// At most this many per role.
        #[arg(long, default_value_t = 50, env = "MINDBUS_DLQ_COUNT")]
        count: usize,
    },
    /// Show one dead letter with all its fields.
    Show {
        /// The dead letter's entry id in its role's dead-letter stream.
        id: EntryId,
    },
    /// Send dead letters back to the stream they came from, unchanged, and remove them.
    Retry {
        /// Entry ids in the dead-letter streams.
        ids: Vec<EntryId>,
        /// Every dead letter (of `--role`, or of every role).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Remove dead letters.
    Drop {
        /// Entry ids in the dead-letter streams.
        ids: Vec<EntryId>,
        /// Every dead letter (of `--role`, or of every role).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// A dead letter and the dead-letter stream it is on.
type Letter = (String, StreamEntry);

/// The dead-letter streams in question: `role`'s, or every role's.
async fn dead_letter_streams(bus: &Bus, role: Option<&str>) -> anyhow::Result<Vec<String>> {
    let roles = match role {
        Some(role) => vec![role.to_owned()],
        None => mindbus::streams::roles(&mut bus.connection(), bus.keys()).await?,
    };
    Ok(roles.iter().map(|r| bus.keys().dead_letters(r)).collect())
}

async fn range(
    bus: &Bus,
    stream: &str,
    start: &str,
    end: &str,
    count: usize,
) -> anyhow::Result<Vec<Letter>> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(&mut bus.connection())
        .await?;
    // XRANGE answers with the entries alone; wrap them as an XREAD reply to reuse its parser.
    let wrapped = Value::Array(vec![Value::Array(vec![
        Value::BulkString(stream.as_bytes().to_vec()),
        reply,
    ])]);
    Ok(parse_read(wrapped)?
        .into_iter()
        .flat_map(|(stream, entries)| entries.into_iter().map(move |e| (stream.clone(), e)))
        .collect())
}

async fn selected(
    bus: &Bus,
    role: Option<&str>,
    ids: &[EntryId],
    all: bool,
) -> anyhow::Result<Vec<Letter>> {
    let streams = dead_letter_streams(bus, role).await?;
    let mut out = Vec::new();
    if all {
        for stream in &streams {
            out.extend(range(bus, stream, "-", "+", 1_000_000).await?);
        }
        return Ok(out);
    }
    if ids.is_empty() {
        bail!("name dead-letter ids, or --all");
    }
    for id in ids {
        let mut found = Vec::new();
        for stream in &streams {
            found.extend(range(bus, stream, &id.to_string(), &id.to_string(), 1).await?);
        }
        match found.len() {
            0 => bail!("no dead letter {id}"),
            1 => out.append(&mut found),
            _ => bail!("dead letter {id} is on several roles' streams; name one with --role"),
        }
    }
    Ok(out)
}

pub async fn run(bus: &Bus, args: DlqArgs) -> anyhow::Result<()> {
    let role = args.role.as_deref();
    match args.command {
        DlqCommand::List { count } => list(bus, role, count).await,
        DlqCommand::Show { id } => {
            let (_, entry) = selected(bus, role, &[id], false).await?.remove(0);
            for (name, value) in entry.fields.unwrap_or_default() {
                println!("{name:>16}  {}", String::from_utf8_lossy(&value));
            }
            Ok(())
        }
        DlqCommand::Retry { ids, all } => retry(bus, selected(bus, role, &ids, all).await?).await,
        DlqCommand::Drop { ids, all } => {
            let letters = selected(bus, role, &ids, all).await?;
            for (stream, entry) in &letters {
                let _: i64 = redis::cmd("XDEL")
                    .arg(stream)
                    .arg(entry.id.to_string())
                    .query_async(&mut bus.connection())
                    .await?;
            }
            println!("dropped {} dead letter(s)", letters.len());
            Ok(())
        }
    }
}

async fn list(bus: &Bus, role: Option<&str>, count: usize) -> anyhow::Result<()> {
    let mut table = Table::new();
    table.set_header([
        "role",
        "dead letter",
        "from stream",
        "entry",
        "deliveries",
        "errortype",
        "reason",
    ]);
    let mut letters = Vec::new();
    for stream in dead_letter_streams(bus, role).await? {
        letters.extend(range(bus, &stream, "-", "+", count).await?);
    }
    for (stream, entry) in letters {
        let Some(fields) = entry.fields else { continue };
        let role = bus.keys().role_of(&stream).unwrap_or_default().to_owned();
        match DeadLetter::decode(fields.clone()) {
            Ok(d) => table.add_row([
                role,
                entry.id.to_string(),
                d.stream,
                d.entry.to_string(),
                d.deliveries.to_string(),
                d.errortype.to_string(),
                d.reason,
            ]),
            Err(e) => table.add_row([
                role,
                entry.id.to_string(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                format!("undecodable ({e}): {}", raw(&fields)),
            ]),
        };
    }
    println!("{table}");
    Ok(())
}

/// Re-publishes each dead letter's original fields to its stream. A command with an
/// idempotency key has its done key cleared first, so its new result is not mistaken for a
/// duplicate of the failed one.
async fn retry(bus: &Bus, letters: Vec<Letter>) -> anyhow::Result<()> {
    let mut conn = bus.connection();
    for (stream, entry) in &letters {
        let letter = DeadLetter::decode(entry.fields.clone().unwrap_or_default())
            .with_context(|| format!("dead letter {}", entry.id))?;
        let (command_id, original) = with_id(&letter);
        // All or nothing: and on a Redis Cluster whose slot is moving, a transaction is
        // refused whole rather than partly sent twice.
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(done) = done_key(bus.keys(), &letter) {
            pipe.cmd("DEL").arg(done).ignore();
        }
        let add = pipe.cmd("XADD").arg(&letter.stream).arg("*");
        for (name, value) in &original {
            add.arg(name).arg(value.as_slice());
        }
        pipe.cmd("XDEL")
            .arg(stream)
            .arg(entry.id.to_string())
            .ignore();
        let (new_id,): (String,) = pipe.query_async(&mut conn).await?;
        println!(
            "{} -> {} {new_id} (command {command_id})",
            entry.id, letter.stream
        );
    }
    Ok(())
}

/// The done key of a dead-lettered command that has an idempotency key.
fn done_key(keys: &Keys, letter: &DeadLetter) -> Option<String> {
    let role = keys.commands_role(&letter.stream)?;
    let (_, key) = letter
        .original
        .iter()
        .rev()
        .find(|(name, _)| name == "idempotencykey")?;
    // An empty key reads as none.
    let key = std::str::from_utf8(key).ok().filter(|k| !k.is_empty())?;
    Some(keys.done(role, key))
}

/// The original fields with the command's `id` made explicit: a command sent without one had
/// it derived from its entry, and the new entry would derive another.
fn with_id(letter: &DeadLetter) -> (String, Fields) {
    let mut original = letter.original.clone();
    let id = match original.iter().find(|(k, _)| k == "id") {
        Some((_, v)) => String::from_utf8_lossy(v).into_owned(),
        None => {
            let id = derived_id(Origin {
                stream: &letter.stream,
                entry: letter.entry,
            })
            .to_string();
            original.push(("id".into(), id.clone().into_bytes()));
            id
        }
    };
    (id, original)
}
