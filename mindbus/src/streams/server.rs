//! The Redis MindBus runs on, one server or a Redis Cluster, and the connections to it.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisFuture,
    Value,
};
use secrecy::{ExposeSecret, SecretString};

use super::ReadConnection;
use crate::Error;

/// How long any non-blocking request may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis server, or a Redis Cluster reached through one of its nodes: which of the two is
/// asked of the server (`cluster_enabled`) on first use, so one URL setting serves both.
#[derive(Debug, Clone)]
pub struct Redis {
    client: redis::Client,
    kind: Arc<tokio::sync::OnceCell<Kind>>,
    /// A connection kept for finding which node serves a slot.
    lookups: Arc<tokio::sync::OnceCell<Connection>>,
}

#[derive(Debug, Clone)]
enum Kind {
    Single,
    Cluster(Box<ClusterClient>),
}

impl Redis {
    /// Parses the URL; connects lazily.
    pub fn open(url: &SecretString) -> Result<Self, Error> {
        let client = redis::Client::open(url.expose_secret()).map_err(Error::RedisUrl)?;
        Ok(Self {
            client,
            kind: Arc::default(),
            lookups: Arc::default(),
        })
    }

    /// The address connections go to, without credentials (for messages).
    pub fn address(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    /// The host the URL names (the one way in to a cluster whose nodes do not know their
    /// own addresses).
    fn host(&self) -> String {
        match self.connection_info().addr() {
            ConnectionAddr::Tcp(host, _) => host.clone(),
            _ => String::new(),
        }
    }

    /// What the connections of the agents' read loops are made from.
    pub(crate) fn connection_info(&self) -> &ConnectionInfo {
        self.client.get_connection_info()
    }

    /// `e` as a failure to reach this server, naming its address.
    pub(crate) fn unreachable(&self, e: impl Into<Error>) -> Error {
        Error::Connect {
            address: self.address(),
            source: Box::new(e.into()),
        }
    }

    /// Whether the server is a node of a Redis Cluster (asked once, on first use).
    pub async fn is_cluster(&self) -> Result<bool, Error> {
        Ok(matches!(self.kind().await?, Kind::Cluster(_)))
    }

    async fn kind(&self) -> Result<&Kind, Error> {
        self.kind.get_or_try_init(|| self.detect()).await
    }

    async fn detect(&self) -> Result<Kind, Error> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.read_connect_error(e.into()))?;
        let info: Result<String, RedisError> = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn)
            .await;
        let cluster = match info {
            Ok(info) => info.lines().any(|line| line.trim() == "cluster_enabled:1"),
            // A user whose ACL denies INFO: `CLUSTER MYID` answers only on a cluster node
            // (elsewhere, or denied too, it is taken for one server).
            Err(e) if e.code().is_some() => redis::cmd("CLUSTER")
                .arg("MYID")
                .query_async::<String>(&mut conn)
                .await
                .is_ok(),
            Err(e) => return Err(self.unreachable(e)),
        };
        if !cluster {
            return Ok(Kind::Single);
        }
        let client = ClusterClient::builder([self.client.get_connection_info().clone()])
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()
            .map_err(Error::RedisUrl)?;
        Ok(Kind::Cluster(Box::new(client)))
    }

    /// The shared connection for writes and short requests; it reconnects after a failure,
    /// and on a cluster routes each request to its key's node.
    pub async fn shared(&self) -> Result<Connection, Error> {
        self.connect(RESPONSE_TIMEOUT).await
    }

    /// A connection of its own for a loop that blocks `block` at a time on one stream: its
    /// response timeout is longer than the block, so a blocked read is never cut short while
    /// the server goes on to deliver the entries.
    pub async fn dedicated(&self, block: Duration) -> Result<Connection, Error> {
        self.connect(block + RESPONSE_TIMEOUT).await
    }

    async fn connect(&self, response_timeout: Duration) -> Result<Connection, Error> {
        match self.kind().await? {
            Kind::Single => {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(response_timeout))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                ConnectionManager::new_with_config(self.client.clone(), config)
                    .await
                    .map(Connection::Single)
                    .map_err(|e| self.unreachable(e))
            }
            Kind::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_response_timeout(response_timeout)
                    .set_connection_timeout(CONNECT_TIMEOUT);
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(Connection::Cluster)
                    .map_err(|e| self.unreachable(e))
            }
        }
    }

    /// Like [`Redis::dedicated`], for a loop that reads streams (`key` being one of them):
    /// the connection only reads them, decodes their entries faster than a general-purpose
    /// one, and follows its streams' slot to whichever cluster node serves it. On a cluster
    /// it starts at the master serving `key`'s slot (asked of any node that answers), so a
    /// read loop does not depend on the node the URL names.
    pub async fn read_connection(
        &self,
        key: &str,
        block: Duration,
    ) -> Result<ReadConnection, Error> {
        let node = match self.kind().await? {
            Kind::Single => None,
            Kind::Cluster(_) => self.master_of(key).await?,
        };
        match node {
            Some(node) => {
                self.read_connection_to(&node, block + RESPONSE_TIMEOUT)
                    .await
            }
            None => ReadConnection::connect(
                self.connection_info(),
                CONNECT_TIMEOUT,
                block + RESPONSE_TIMEOUT,
            )
            .await
            .map_err(|e| self.read_connect_error(e)),
        }
    }

    /// The cluster master serving `key`'s slot (`host:port`), if the cluster says.
    async fn master_of(&self, key: &str) -> Result<Option<String>, Error> {
        let mut conn = self
            .lookups
            .get_or_try_init(|| self.shared())
            .await?
            .clone();
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await?;
        let ranges: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await?;
        let Value::Array(ranges) = ranges else {
            return Ok(None);
        };
        for range in ranges {
            let Value::Array(range) = range else { continue };
            let (Some(Value::Int(from)), Some(Value::Int(to)), Some(Value::Array(master))) =
                (range.first(), range.get(1), range.get(2))
            else {
                continue;
            };
            if (*from..=*to).contains(&slot)
                && let (Some(host), Some(Value::Int(port))) = (master.first(), master.get(1))
            {
                let host: String =
                    redis::from_redis_value(host.clone()).map_err(RedisError::from)?;
                return Ok(Some(format!("{host}:{port}")));
            }
        }
        Ok(None)
    }

    /// A read connection to the cluster node `node` (`host:port`), with this server's
    /// credentials, whose replies must come within `timeout`.
    pub(crate) async fn read_connection_to(
        &self,
        node: &str,
        timeout: Duration,
    ) -> Result<ReadConnection, Error> {
        let (host, port) = parse_node(node, &self.host())?;
        let info = self
            .connection_info()
            .clone()
            .set_addr(ConnectionAddr::Tcp(host, port));
        ReadConnection::connect(&info, CONNECT_TIMEOUT, timeout)
            .await
            .map_err(|e| self.read_connect_error(e))
    }

    /// A read connection to the cluster node `node`, for short requests.
    pub(crate) async fn short_connection_to(&self, node: &str) -> Result<ReadConnection, Error> {
        self.read_connection_to(node, RESPONSE_TIMEOUT).await
    }

    /// `e`, a failure to connect, as a refusal (a bad password or database) or as a
    /// failure to reach the server.
    fn read_connect_error(&self, e: Error) -> Error {
        match e {
            // A refused password or database is not a matter of reaching the server.
            Error::Redis(ref r)
                if r.code().is_some() || r.kind() == redis::ErrorKind::AuthenticationFailed =>
            {
                e
            }
            e => self.unreachable(e),
        }
    }
}

/// `items` grouped by the cluster slot of each one's key, in first-seen order, when `cluster`
/// (else all in one group, without a slot): one group per command, pipeline or script a
/// cluster accepts.
pub(crate) fn by_slot<T>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> &str,
    cluster: bool,
) -> Vec<(Option<Slot>, Vec<T>)> {
    let mut groups: Vec<(Option<Slot>, Vec<T>)> = Vec::new();
    for item in items {
        let slot = cluster.then(|| Slot::for_key(key(&item)));
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(item),
            None => groups.push((slot, vec![item])),
        }
    }
    groups
}

/// A cluster node's `host:port` (as redirects and the cluster's own replies name it). A
/// node that does not know its own address (a cluster of one, never told) is named with an
/// empty host, which means the host the request went to: `asked`.
pub(crate) fn parse_node(node: &str, asked: &str) -> Result<(String, u16), Error> {
    let (host, port) = node
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse().ok()?)))
        .ok_or_else(|| Error::Protocol(format!("bad cluster node address {node:?}")))?;
    let host = if host.is_empty() { asked } else { host };
    Ok((host.to_owned(), port))
}

/// A connection for requests that do not block: to one server (reconnecting after a
/// failure), or to a cluster (each request routed to its key's node, following slot moves).
/// Cheap to clone. A pipeline or script on a cluster must keep to one slot;
/// [`Connection::batches`] splits work that spans several.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connection::Single(_) => "Connection::Single",
            Connection::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

impl Connection {
    /// Whether it is a connection to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// `items` in batches that one pipeline or script can take: on a cluster one batch per
    /// slot of each item's key (in first-seen order), on one server a single batch.
    pub fn batches<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &str,
    ) -> Vec<Vec<T>> {
        by_slot(items, key, self.is_cluster())
            .into_iter()
            .map(|(_, group)| group)
            .collect()
    }

    /// Runs `cmd` (a keyless one, such as `SCAN`) on every master: its replies by node
    /// (the node's address, or `None` on one server).
    pub async fn on_every_master(
        &mut self,
        cmd: &Cmd,
    ) -> Result<Vec<(Option<String>, Value)>, Error> {
        match self {
            Connection::Single(c) => Ok(vec![(None, cmd.query_async(c).await?)]),
            Connection::Cluster(c) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let replies = c.route_command(cmd.clone(), routing).await?;
                let Value::Map(replies) = replies else {
                    return Err(Error::Protocol(format!(
                        "a request to every master answered {replies:?}"
                    )));
                };
                replies
                    .into_iter()
                    .map(|(node, reply)| {
                        let node: String =
                            redis::from_redis_value(node).map_err(RedisError::from)?;
                        match reply {
                            Value::ServerError(e) => Err(RedisError::from(e).into()),
                            reply => Ok((Some(node), reply)),
                        }
                    })
                    .collect()
            }
        }
    }

    /// Runs `cmd` on the node `node` (an address [`Connection::on_every_master`] named), or
    /// on the one server.
    pub async fn on_node(&mut self, node: Option<&str>, cmd: &Cmd) -> Result<Value, Error> {
        match (self, node) {
            (Connection::Cluster(c), Some(node)) => {
                let (host, port) = parse_node(node, "")?;
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                Ok(c.route_command(cmd.clone(), routing).await?)
            }
            (c, _) => Ok(cmd.query_async(c).await?),
        }
    }
}
