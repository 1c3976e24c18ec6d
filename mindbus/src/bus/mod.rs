//! The bus client: publish commands, wait for their results (through [`Results`], however
//! many at once), follow streams, cancel.

mod follow;
mod overview;
mod results;

use std::sync::Arc;
use std::time::Duration;

use crate::streams::Connection;
use crate::wire::MessageId;

pub use follow::Follower;
pub use overview::{GroupInfo, StreamInfo};
pub use results::{ResultWait, Results};

use crate::Error;
use crate::config::RedisConfig;
use crate::keys::{Keys, validate_role};
use crate::streams::Redis;
use crate::telemetry::spans;
use crate::wire::{Cancel, Command, EntryId, Fields};
use tracing::Instrument as _;

/// Approximate length the control stream is kept to.
pub const CONTROL_MAXLEN: u64 = 10_000;

/// A handle on one MindBus deployment (one Redis, one key prefix). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    redis: Redis,
    keys: Keys,
    conn: Connection,
    /// Shared by every clone, stopped with the last.
    results: Arc<Results>,
}

impl Bus {
    /// Connects to the Redis in `config`.
    pub async fn connect(config: &RedisConfig) -> Result<Self, Error> {
        let redis = Redis::open(&config.url)?;
        let conn = redis.shared().await?;
        let keys = Keys::new(config.prefix.clone());
        Ok(Self {
            results: Results::new(redis.clone(), keys.clone()),
            redis,
            keys,
            conn,
        })
    }

    /// The key names of this deployment.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The server, for callers that need a connection of their own.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The shared connection (not for blocking reads).
    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// Publishes `command` to `role`'s command stream and returns the stream entry id.
    /// When traces are exported, the entry carries the context of a producer span (a
    /// child of the current span, or of the command's own `traceparent`).
    pub async fn publish(&self, role: &str, command: &Command) -> Result<EntryId, Error> {
        validate_role(role).map_err(Error::Config)?;
        let stream = self.keys.commands(role);
        let mut fields = command.encode()?;
        let envelope = &command.envelope;
        let span = match spans::producer(&stream, &envelope.id, &envelope.traceparent) {
            Some((span, carried)) => {
                let traceparent = fields.iter_mut().find(|(name, _)| name == "traceparent");
                if let Some((_, value)) = traceparent {
                    *value = carried.to_string().into_bytes();
                }
                span
            }
            None => tracing::Span::none(),
        };
        xadd(&mut self.conn.clone(), &stream, None, &fields)
            .instrument(span)
            .await
    }

    /// Where results are waited for: each role's result stream, followed from the first
    /// wait for one of its commands on.
    pub fn results(&self) -> &Arc<Results> {
        &self.results
    }

    /// Publishes `command` and waits up to `timeout` for its result. `None` when the wait
    /// ran out (the command may still complete later).
    pub async fn call(
        &self,
        role: &str,
        command: Command,
        timeout: Duration,
    ) -> Result<Option<crate::wire::CommandResult>, Error> {
        let wait = self.results.register(role, &command.envelope.id).await?;
        self.publish(role, &command).await?;
        Ok(wait.wait(timeout).await)
    }

    /// Cancels a command: one that has not started will not start, a running one is stopped
    /// and reports `canceled`.
    pub async fn cancel(&self, command_id: &MessageId) -> Result<(), Error> {
        self.control(Cancel::Command(command_id.clone())).await
    }

    /// Cancels every command of a run, however many: one control entry, which agents match
    /// against each command's `runid`.
    pub async fn cancel_run(&self, run_id: &str) -> Result<(), Error> {
        self.control(Cancel::Run(run_id.to_owned())).await
    }

    async fn control(&self, cancel: Cancel) -> Result<(), Error> {
        let stream = self.keys.control();
        xadd(
            &mut self.conn.clone(),
            &stream,
            Some(CONTROL_MAXLEN),
            &cancel.encode(),
        )
        .await?;
        Ok(())
    }
}

/// `XADD stream [MAXLEN ~ n] * fields...`.
pub(crate) async fn xadd(
    conn: &mut Connection,
    stream: &str,
    maxlen: Option<u64>,
    fields: &Fields,
) -> Result<EntryId, Error> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(maxlen) = maxlen {
        cmd.arg("MAXLEN").arg("~").arg(maxlen);
    }
    cmd.arg("*");
    for (name, value) in fields {
        cmd.arg(name).arg(value.as_slice());
    }
    let id: String = cmd.query_async(conn).await?;
    id.parse().map_err(Error::Protocol)
}
