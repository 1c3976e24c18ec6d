//! The registry of roles, and what every stream holds and how far each group is: for
//! `mindbus status` and `top`, the gateway's `/v1/streams` and `/v1/roles`, and the
//! monitor's stream gauges.

use redis::Value;
use serde::Serialize;

use super::Bus;
use crate::Error;
use crate::keys::Stream;
use crate::streams::info_map;

/// One stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamInfo {
    /// The key.
    pub stream: String,
    /// The role it belongs to.
    pub role: String,
    /// Which of the role's streams it is.
    pub kind: Stream,
    /// Entries in it now.
    pub length: u64,
    /// Entries ever added to it (`None` before Redis 7): what rates are computed from.
    pub added: Option<u64>,
    /// Its consumer groups.
    pub groups: Vec<GroupInfo>,
}

/// One consumer group of a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupInfo {
    /// The group's name (a role's group is named after the role).
    pub name: String,
    /// Consumers it has (live or not yet cleaned up).
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered; `None` when Redis cannot tell.
    pub lag: Option<u64>,
    /// The last entry id delivered.
    pub last_delivered: String,
}

fn number(value: Option<&Value>) -> Option<u64> {
    match value {
        Some(Value::Int(i)) => u64::try_from(*i).ok(),
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).parse().ok(),
        _ => None,
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    }
}

impl Bus {
    /// The roles in the registry of roles (sorted): those an agent has started for.
    pub async fn roles(&self) -> Result<Vec<String>, Error> {
        let mut roles: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys().roles())
            .query_async(&mut self.connection())
            .await?;
        roles.sort();
        Ok(roles)
    }

    /// Whether `role` is in the registry of roles.
    pub async fn has_role(&self, role: &str) -> Result<bool, Error> {
        Ok(redis::cmd("SISMEMBER")
            .arg(self.keys().roles())
            .arg(role)
            .query_async(&mut self.connection())
            .await?)
    }

    /// Every stream of `roles`: each role's command, result, event and dead-letter streams.
    pub async fn overview(&self, roles: &[String]) -> Result<Vec<StreamInfo>, Error> {
        let mut conn = self.connection();
        let streams = roles
            .iter()
            .flat_map(|role| Stream::ALL.map(|kind| (role.clone(), kind)));
        let mut out = Vec::with_capacity(roles.len() * Stream::ALL.len());
        for (role, kind) in streams {
            let stream = self.keys().stream(kind, &role);
            let info: Result<Value, redis::RedisError> = redis::cmd("XINFO")
                .arg("STREAM")
                .arg(&stream)
                .query_async(&mut conn)
                .await;
            // A stream not written yet is empty; any other failure is the overview's.
            let info = match info {
                Err(e) if e.to_string().contains("no such key") => None,
                other => Some(other?),
            };
            let Some(info) = info else {
                out.push(StreamInfo {
                    stream,
                    role,
                    kind,
                    length: 0,
                    added: None,
                    groups: Vec::new(),
                });
                continue;
            };
            let info = info_map(info);
            let length = number(info.get("length")).unwrap_or(0);
            let added = number(info.get("entries-added"));
            let groups: Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut conn)
                .await?;
            let groups = match groups {
                Value::Array(groups) => groups.into_iter().map(group).collect(),
                _ => Vec::new(),
            };
            out.push(StreamInfo {
                stream,
                role,
                kind,
                length,
                added,
                groups,
            });
        }
        Ok(out)
    }
}

fn group(value: Value) -> GroupInfo {
    let g = info_map(value);
    GroupInfo {
        name: text(g.get("name")),
        consumers: number(g.get("consumers")).unwrap_or(0),
        pending: number(g.get("pending")).unwrap_or(0),
        lag: number(g.get("lag")),
        last_delivered: text(g.get("last-delivered-id")),
    }
}
