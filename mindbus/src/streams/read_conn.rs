//! The stream read connection: one RESP2 connection of its own per blocking read, whose
//! `XREADGROUP` and `XREAD` replies are decoded by `redis-protocol` straight into stream
//! entries. Reading commands is an agent's hottest path, and redis-rs's parser spent about
//! four times as long per entry; every other request still goes through redis-rs.
//!
//! On a Redis Cluster the connection follows its streams' slot: a `MOVED` reply (also what a
//! read blocked on a slot that moved away gets) moves it to the node named, and an `ASK`
//! reply (the slot is being migrated and the stream is already on the target) moves it there
//! and marks each read `ASKING` until a `MOVED` says where the slot settled.

use std::time::Duration;

use bytes::BytesMut;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, ServerErrorKind};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::StreamEntry;
use crate::Error;
use crate::wire::Fields;

/// Room made in the buffer before each read: a 512-entry reply is about 160 KB.
const READ_CHUNK: usize = 64 * 1024;
/// Redirects followed for one read: a slot settles after one or two.
const MAX_REDIRECTS: usize = 5;
/// The pause after a cluster says `TRYAGAIN` (a slot's keys are half migrated).
const TRY_AGAIN_PAUSE: Duration = Duration::from_millis(20);

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Sends one command at a time and reads its reply.
pub struct ReadConnection {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// Where it is connected, and with which credentials.
    info: ConnectionInfo,
    connect_timeout: Duration,
    timeout: Duration,
    /// Each read is preceded by `ASKING` (the node is importing the slot).
    asking: bool,
    /// The server's id for this connection (`CLIENT ID`), once asked.
    id: Option<i64>,
    /// A request was cut short (its future dropped): its reply may still come, so the
    /// connection cannot be used again.
    broken: bool,
}

impl std::fmt::Debug for ReadConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadConnection")
            .field("address", &self.info.addr().to_string())
            .field("buffered", &self.buf.len())
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl ReadConnection {
    /// Connects and authenticates as `info` says; each reply must come within `timeout`.
    pub(crate) async fn connect(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let io = tokio::time::timeout(connect_timeout, open(info.addr()))
            .await
            .map_err(|_| timed_out("connecting"))??;
        let mut conn = Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            info: info.clone(),
            connect_timeout,
            timeout,
            asking: false,
            id: None,
            broken: false,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            conn.call(auth.arg(password)).await?;
        }
        if settings.db() != 0 {
            conn.call(redis::cmd("SELECT").arg(settings.db())).await?;
        }
        Ok(conn)
    }

    /// Runs an `XREADGROUP` or `XREAD` of one or more streams (all in one cluster slot) and
    /// returns their entries, by stream; follows the slot to another node as the cluster
    /// says. Empty when the cluster asks to try again, or the read was unblocked without
    /// entries (its stream deleted, `CLIENT UNBLOCK`).
    pub async fn read_streams(
        &mut self,
        cmd: &Cmd,
    ) -> Result<Vec<(String, Vec<StreamEntry>)>, Error> {
        for _ in 0..MAX_REDIRECTS {
            let error = match self.call(cmd).await {
                Err(Error::Redis(e)) => e,
                reply => return streams_of(reply?),
            };
            if let Some((node, _)) = error.redirect_node() {
                let asking = error.kind() == ErrorKind::Server(ServerErrorKind::Ask);
                tracing::debug!(node, asking, "following the streams' slot");
                let node = node.to_owned();
                self.move_to(&node).await?;
                self.asking = asking;
                continue;
            }
            match error.code() {
                Some("TRYAGAIN") => tokio::time::sleep(TRY_AGAIN_PAUSE).await,
                Some("UNBLOCKED") => {}
                _ => return Err(error.into()),
            }
            return Ok(Vec::new());
        }
        Err(Error::Protocol(format!(
            "the cluster redirected a read more than {MAX_REDIRECTS} times"
        )))
    }

    /// The node this connection is on, as `host:port` (`None` on a Unix socket).
    pub(crate) fn node(&self) -> Option<String> {
        match self.info.addr() {
            ConnectionAddr::Tcp(host, port) => Some(format!("{host}:{port}")),
            _ => None,
        }
    }

    /// The server's id for this connection (for `CLIENT UNBLOCK`), asked once.
    pub(crate) async fn client_id(&mut self) -> Result<i64, Error> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        let id = match self
            .call(&redis::cmd("CLIENT").arg("ID").to_owned())
            .await?
        {
            BytesFrame::Integer(id) => id,
            other => return Err(unexpected("CLIENT ID", &other)),
        };
        self.id = Some(id);
        Ok(id)
    }

    /// Runs a short command (no redirects followed) and returns its integer reply.
    pub(crate) async fn integer(&mut self, cmd: &Cmd) -> Result<i64, Error> {
        match self.call(cmd).await? {
            BytesFrame::Integer(n) => Ok(n),
            other => Err(unexpected("integer", &other)),
        }
    }

    /// Whether a request was cut short (the connection cannot be used again).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Reconnects to `node` (`host:port`, as a redirect names it), with the same
    /// credentials.
    async fn move_to(&mut self, node: &str) -> Result<(), Error> {
        let asked = match self.info.addr() {
            ConnectionAddr::Tcp(host, _) => host.clone(),
            _ => String::new(),
        };
        let (host, port) = super::server::parse_node(node, &asked)?;
        let info = self.info.clone().set_addr(ConnectionAddr::Tcp(host, port));
        *self = Self::connect(&info, self.connect_timeout, self.timeout).await?;
        Ok(())
    }

    /// Sends `cmd` (after `ASKING` while the slot is being imported here) and reads its
    /// reply; an error reply is an error.
    async fn call(&mut self, cmd: &Cmd) -> Result<BytesFrame, Error> {
        if self.broken {
            return Err(Error::Protocol(
                "a request on this connection was cut short".into(),
            ));
        }
        self.broken = true;
        let mut packed = Vec::new();
        if self.asking {
            redis::cmd("ASKING").write_packed_command(&mut packed);
        }
        cmd.write_packed_command(&mut packed);
        self.io.write_all(&packed).await.map_err(RedisError::from)?;
        if self.asking {
            // `+OK`, or an error the command's own reply will explain.
            tokio::time::timeout(self.timeout, self.reply())
                .await
                .map_err(|_| timed_out("waiting for a reply"))??;
        }
        let frame = tokio::time::timeout(self.timeout, self.reply())
            .await
            .map_err(|_| timed_out("waiting for a reply"))??;
        self.broken = false;
        match frame {
            BytesFrame::Error(message) => Err(server_error(&message)),
            frame => Ok(frame),
        }
    }

    async fn reply(&mut self) -> Result<BytesFrame, Error> {
        loop {
            let decoded = decode_bytes_mut(&mut self.buf)?;
            if let Some((frame, _, _)) = decoded {
                return Ok(frame);
            }
            // A full BytesMut would grow 64 bytes at a time, and every short read means
            // another decoding attempt from the reply's start.
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let read = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(RedisError::from)?;
            if read == 0 {
                return Err(Error::Protocol("redis closed the connection".into()));
            }
        }
    }
}

async fn open(addr: &ConnectionAddr) -> Result<Box<dyn Io>, Error> {
    match addr {
        ConnectionAddr::Tcp(host, port) => {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(RedisError::from)?;
            tcp.set_nodelay(true).map_err(RedisError::from)?;
            Ok(Box::new(tcp))
        }
        ConnectionAddr::Unix(path) => Ok(Box::new(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(RedisError::from)?,
        )),
        other => Err(Error::Config(format!(
            "the agent's read connection cannot connect to {other}"
        ))),
    }
}

fn timed_out(what: &str) -> Error {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("timed out {what}"),
    ))
    .into()
}

/// An error reply as redis-rs would report it, so that its code (`NOGROUP`) is kept.
fn server_error(message: &str) -> Error {
    match redis::parse_redis_value(format!("-{message}\r\n").as_bytes()) {
        Ok(redis::Value::ServerError(e)) => RedisError::from(e).into(),
        _ => Error::Protocol(format!("error reply: {message}")),
    }
}

fn unexpected(what: &str, frame: &BytesFrame) -> Error {
    Error::Protocol(format!("unexpected {what} reply: {frame:?}"))
}

/// The entries of a read reply by stream: `[[stream, [[id, fields], ...]], ...]`, or null
/// on timeout.
fn streams_of(frame: BytesFrame) -> Result<Vec<(String, Vec<StreamEntry>)>, Error> {
    let streams = match frame {
        BytesFrame::Null => return Ok(Vec::new()),
        BytesFrame::Array(streams) => streams,
        other => return Err(unexpected("read", &other)),
    };
    let mut out = Vec::with_capacity(streams.len());
    for stream in streams {
        let BytesFrame::Array(pair) = stream else {
            return Err(unexpected("stream", &stream));
        };
        let mut pair = pair.into_iter();
        match (pair.next(), pair.next(), pair.next()) {
            (Some(BytesFrame::BulkString(name)), Some(BytesFrame::Array(entries)), None) => {
                let name = String::from_utf8(name.to_vec())
                    .map_err(|_| Error::Protocol(format!("bad stream name {name:?}")))?;
                let entries = entries
                    .into_iter()
                    .map(entry_of)
                    .collect::<Result<_, _>>()?;
                out.push((name, entries));
            }
            (name, entries, _) => {
                return Err(Error::Protocol(format!(
                    "unexpected stream reply: {name:?} {entries:?}"
                )));
            }
        }
    }
    Ok(out)
}

fn entry_of(frame: BytesFrame) -> Result<StreamEntry, Error> {
    let BytesFrame::Array(pair) = frame else {
        return Err(unexpected("entry", &frame));
    };
    let mut parts = pair.into_iter();
    let (Some(BytesFrame::BulkString(id)), Some(fields), None) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Protocol("unexpected entry reply".into()));
    };
    let id = std::str::from_utf8(&id)
        .ok()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("bad entry id {id:?}")))?;
    let fields = match fields {
        // Deleted while pending.
        BytesFrame::Null => None,
        BytesFrame::Array(items) => Some(fields_of(items)?),
        other => return Err(unexpected("fields", &other)),
    };
    Ok(StreamEntry { id, fields })
}

fn fields_of(items: Vec<BytesFrame>) -> Result<Fields, Error> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        // A name that is not UTF-8 must not make the whole reply unreadable (the entry would
        // then be stuck in a pending list); the decoders report it as malformed.
        let name = match String::from_utf8(bytes_of(name)?) {
            Ok(name) => name,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        out.push((name, bytes_of(value)?));
    }
    Ok(out)
}

fn bytes_of(frame: BytesFrame) -> Result<Vec<u8>, Error> {
    match frame {
        BytesFrame::BulkString(bytes) | BytesFrame::SimpleString(bytes) => Ok(bytes.to_vec()),
        BytesFrame::Integer(i) => Ok(i.to_string().into_bytes()),
        other => Err(unexpected("field value", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::is_nogroup;

    fn decode(resp: &[u8]) -> BytesFrame {
        let mut buf = BytesMut::from(resp);
        decode_bytes_mut(&mut buf).unwrap().unwrap().0
    }

    #[test]
    fn a_read_reply_becomes_entries_by_stream_with_deleted_ones_and_odd_names_kept() {
        let reply = decode(
            b"*1\r\n*2\r\n$3\r\ncmd\r\n*2\r\n\
              *2\r\n$3\r\n1-0\r\n*4\r\n$4\r\ntype\r\n$4\r\necho\r\n$2\r\n\xff\xfe\r\n$1\r\nx\r\n\
              *2\r\n$3\r\n2-5\r\n*-1\r\n",
        );
        let mut streams = streams_of(reply).unwrap();
        assert_eq!(streams.len(), 1);
        let (name, entries) = streams.pop().unwrap();
        assert_eq!(name, "cmd");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id.to_string(), "1-0");
        let fields = entries[0].fields.as_ref().unwrap();
        assert_eq!(fields[0], ("type".into(), b"echo".to_vec()));
        assert_eq!(
            fields[1].0, "\u{fffd}\u{fffd}",
            "a non-UTF-8 name is kept, lossily"
        );
        assert_eq!(entries[1].id.to_string(), "2-5");
        assert_eq!(entries[1].fields, None, "deleted while pending");
    }

    #[test]
    fn a_timed_out_read_is_empty() {
        assert!(streams_of(decode(b"*-1\r\n")).unwrap().is_empty());
    }

    #[test]
    fn a_malformed_reply_is_an_error_naming_what_was_wrong() {
        let err = streams_of(decode(
            b"*1\r\n*2\r\n$3\r\ncmd\r\n*1\r\n*2\r\n$2\r\nxx\r\n*0\r\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("bad entry id"), "{err}");
        let err = streams_of(decode(b":3\r\n")).unwrap_err();
        assert!(err.to_string().contains("unexpected read reply"), "{err}");
    }

    #[test]
    fn an_error_reply_keeps_its_code() {
        let err = server_error("NOGROUP No such key 'cmd' or consumer group 'echo'");
        assert!(is_nogroup(&err), "{err}");
    }
}
