//! The bus client: publish commands, wait for their results (one at a time, or many at once
//! through [`Replies`]), follow streams, cancel.

mod follow;
mod overview;
mod replies;
mod wait;

use std::time::Duration;

use crate::wire::MessageId;
use redis::aio::ConnectionManager;

pub use follow::Follower;
pub use overview::{GroupInfo, StreamInfo};
pub use replies::{Replies, Waiter};
pub use wait::ResultWaiter;

use crate::Error;
use crate::config::RedisConfig;
use crate::keys::{Keys, validate_role};
use crate::streams::Redis;
use crate::wire::{Command, EntryId, Fields};

/// Approximate length the control stream is kept to.
pub const CONTROL_MAXLEN: u64 = 10_000;

/// A handle on one MindBus deployment (one Redis, one key prefix). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    redis: Redis,
    keys: Keys,
    conn: ConnectionManager,
}

impl Bus {
    /// Connects to the Redis in `config`.
    pub async fn connect(config: &RedisConfig) -> Result<Self, Error> {
        let redis = Redis::open(&config.url)?;
        let conn = redis.shared().await?;
        Ok(Self {
            redis,
            keys: Keys::new(config.prefix.clone()),
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
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Publishes `command` to `role`'s command stream and returns the stream entry id.
    pub async fn publish(&self, role: &str, command: &Command) -> Result<EntryId, Error> {
        validate_role(role).map_err(Error::Config)?;
        let fields = command.encode()?;
        xadd(
            &mut self.conn.clone(),
            &self.keys.commands(role),
            None,
            &fields,
        )
        .await
    }

    /// Publishes `command` with a private `replyto` stream and waits up to `timeout` for its
    /// result. `None` when the wait ran out (the command may still complete later).
    pub async fn call(
        &self,
        role: &str,
        mut command: Command,
        timeout: Duration,
    ) -> Result<Option<crate::wire::CommandResult>, Error> {
        let reply = self.keys.reply(&MessageId::new().to_string());
        command.replyto = Some(reply.clone());
        let mut waiter = ResultWaiter::new(self).await?;
        self.publish(role, &command).await?;
        let result = waiter
            .wait_reply(&reply, &command.envelope.id, timeout)
            .await;
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(&reply)
            .query_async(&mut self.conn.clone())
            .await;
        result
    }

    /// Cancels a command: one that has not started will not start, a running one is stopped
    /// and reports `canceled`.
    pub async fn cancel(&self, command_id: &MessageId) -> Result<(), Error> {
        self.control_cancel("correlationid", &command_id.to_string())
            .await
    }

    /// Cancels every command of a run, however many: one control entry, which agents match
    /// against each command's `runid`.
    pub async fn cancel_run(&self, run_id: &str) -> Result<(), Error> {
        self.control_cancel("runid", run_id).await
    }

    async fn control_cancel(&self, field: &str, value: &str) -> Result<(), Error> {
        redis::cmd("XADD")
            .arg(self.keys.control())
            .arg("MAXLEN")
            .arg("~")
            .arg(CONTROL_MAXLEN)
            .arg("*")
            .arg("type")
            .arg(CONTROL_CANCEL)
            .arg(field)
            .arg(value)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// The control-stream entry `type` that cancels a command.
pub const CONTROL_CANCEL: &str = "mindbus.cancel";

/// `XADD stream [MAXLEN ~ n] * fields...`.
pub(crate) async fn xadd(
    conn: &mut ConnectionManager,
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
