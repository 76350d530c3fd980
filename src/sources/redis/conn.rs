//! Connections to Redis nodes: one per node (a standalone server, or each master of a cluster), read-only by
//! construction (the collector only ever sends the commands in [`READ_COMMANDS`]), with one reconnect allowed per
//! collector run so a dropped connection resumes where it stopped.

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult, Value,
    aio::MultiplexedConnection,
};

use super::{
    Error,
    link::{is_connection_error, label},
    resp,
};
use crate::config::{Environment, Secret};

/// Every command this collector sends besides the handshake (AUTH, SELECT). All are read-only.
pub const READ_COMMANDS: &[&str] = &[
    "INFO",
    "CONFIG GET",
    "CLIENT LIST",
    "CLUSTER NODES",
    "SCAN",
    "TYPE",
    "PTTL",
    "GET",
    "HSCAN",
    "SSCAN",
    "ZSCAN",
    "LRANGE",
    "XLEN",
    "XINFO STREAM",
    "XINFO GROUPS",
    "XINFO CONSUMERS",
    "XPENDING",
    "XRANGE",
    "XREVRANGE",
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the connection settings: the site's URL (which may carry credentials from the environment), the user
/// name and the password resolved from its reference. The library's `CLIENT SETINFO` is skipped: nothing but
/// reads and the handshake is sent.
pub fn connection_info(env: &Environment, password: Option<&Secret>) -> Result<ConnectionInfo, Error> {
    let shown = |source| Error::Url { display: env.redis.display.clone(), source };
    let info = env.redis.url().expose_secret().into_connection_info().map_err(shown)?;
    let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(user) = &env.redis.username {
        settings = settings.set_username(user);
    }
    if let Some(pw) = password {
        settings = settings.set_password(pw.expose_secret());
    }
    let info = info.set_redis_settings(settings);
    let Some(ca) = &env.redis.ca_file else { return Ok(info) };
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(Error::CaWithoutTls { display: env.redis.display.clone() });
    }
    // The CA goes into the settings' TLS parameters, which every connection, reconnect and cluster sibling keeps.
    let pem = std::fs::read(ca).map_err(|source| Error::CaFile { path: ca.clone(), source })?;
    let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
    let client =
        Client::build_with_tls(info, certs).map_err(|source| Error::CaCertificate { path: ca.clone(), source })?;
    Ok(client.get_connection_info().clone())
}

/// One Redis node.
pub struct Node {
    pub label: String,
    info: ConnectionInfo,
    conn: MultiplexedConnection,
    /// The direct reader's connection ([`resp`]), opened for the first page it reads.
    direct: Option<resp::Direct>,
    /// Reconnects made; at most one per node and run.
    pub reconnects: u32,
    /// Whether the node answered something that is not RESP: then it is no Redis server, and what the client
    /// says about the bytes (or the connection the other server closed) is no help to anyone.
    pub not_redis: bool,
}

impl Node {
    pub async fn connect(info: ConnectionInfo) -> RedisResult<Self> {
        let label = label(&info);
        let conn = open(&info).await?;
        Ok(Self { label, info, conn, direct: None, reconnects: 0, not_redis: false })
    }

    /// Sends a read command. If the connection is lost, reconnects once (per node and run) and sends it again:
    /// every command is a read bounded by explicit ids or cursors, so resending resumes exactly where the export
    /// stood (an `XRANGE` from the last exported id, the same `SCAN` cursor).
    pub async fn query(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        self.send(cmd).await?.extract_error()
    }

    /// [`Node::query`] for a reply that is data in bulk (a page of `XRANGE`): the reply as parsed, without the
    /// client's walk that rebuilds every array of it looking for nested errors (a tenth of a DLQ export's CPU).
    /// A command's own error is the whole reply; only transactions and pipelines nest them, and this is neither.
    pub async fn query_bulk(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        match self.send(cmd).await? {
            reply @ Value::ServerError(_) => reply.extract_error(),
            data => Ok(data),
        }
    }

    /// The reply as parsed, a server's error still in it; reconnecting once as [`Node::query`] says.
    async fn send(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        use redis::aio::ConnectionLike;
        let reply = match self.conn.req_packed_command(cmd).await {
            Err(e) if is_connection_error(&e) && self.reconnects == 0 => match self.reconnect().await {
                Ok(()) => self.conn.req_packed_command(cmd).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        if reply.as_ref().is_err_and(is_not_resp) {
            self.not_redis = true;
        }
        reply
    }

    /// The node's one reconnect. Whatever dropped one of its connections (a restart, `CLIENT KILL`, the network)
    /// most likely dropped the other too, so both are new from here: the client's now, the direct reader's when it
    /// next reads.
    async fn reconnect(&mut self) -> RedisResult<()> {
        self.reconnects += 1;
        self.direct = None;
        self.conn = open(&self.info).await?;
        Ok(())
    }

    /// Closes the direct reader's connection (after a stream's entries): idle while the next stream's groups and
    /// pending entries are read, a server's `timeout` could close it and cost the node its one reconnect.
    pub fn close_direct(&mut self) {
        self.direct = None;
    }

    /// Whether the direct reader can read this node: plain TCP or a Unix socket (TLS is read through the client).
    pub fn reads_directly(&self) -> bool {
        matches!(self.info.addr(), ConnectionAddr::Tcp(..) | ConnectionAddr::Unix(_))
    }

    /// Sends a packed read command on the direct reader's connection (opening it first), so the server works on it
    /// while the caller writes the previous page. Reconnects once as [`Node::query`] says.
    pub async fn direct_send(&mut self, packed: &[u8]) -> Result<(), resp::Error> {
        match self.direct_send_once(packed).await {
            Err(e) if e.is_connection() && self.reconnects == 0 => {
                self.reconnect().await.map_err(resp::Error::Client)?;
                self.direct_send_once(packed).await
            }
            other => other,
        }
    }

    async fn direct_send_once(&mut self, packed: &[u8]) -> Result<(), resp::Error> {
        let direct = match &mut self.direct {
            Some(d) => d,
            None => self.direct.insert(resp::Direct::open(&self.info, CONNECT_TIMEOUT, RESPONSE_TIMEOUT).await?),
        };
        direct.send(packed).await
    }

    async fn direct_receive_once(&mut self, page: &mut resp::Page) -> Result<(), resp::Error> {
        match &mut self.direct {
            Some(d) => d.receive(page).await,
            None => Err(resp::Error::Closed),
        }
    }

    /// Reads the reply to `packed`, sent by [`Node::direct_send`], into `page`. If the connection is lost, the
    /// node's one reconnect is made and `packed` sent again: a page bounded by ids reads the same after it.
    pub async fn direct_receive(&mut self, packed: &[u8], page: &mut resp::Page) -> Result<(), resp::Error> {
        match self.direct_receive_once(page).await {
            Err(e) if e.is_connection() && self.reconnects == 0 => {
                self.reconnect().await.map_err(resp::Error::Client)?;
                self.direct_send_once(packed).await?;
                self.direct_receive_once(page).await
            }
            other => other,
        }
    }

    /// Settings for another node of the same deployment (a cluster master), same credentials and TLS.
    pub fn sibling(&self, host: &str, port: u16) -> ConnectionInfo {
        let addr = match self.info.addr() {
            ConnectionAddr::TcpTls { insecure, tls_params, .. } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        self.info.clone().set_addr(addr)
    }
}

async fn open(info: &ConnectionInfo) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    Client::open(info.clone())?.get_multiplexed_async_connection_with_config(&config).await
}

/// Whether the reply could not be read as RESP at all: another kind of server answered.
pub fn is_not_resp(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Parse
}

/// The masters of a cluster from `CLUSTER NODES`, as (host, port); the seed's host stands in for an empty address.
pub fn cluster_masters(nodes: &str, seed_host: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (cols.get(1), cols.get(2)) else { continue };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "fail" | "noaddr" | "handshake")) {
            continue;
        }
        let hostport = addr.split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = hostport.rsplit_once(':') else { continue };
        let Ok(port) = port.parse::<u16>() else { continue };
        let host = if host.is_empty() { seed_host } else { host };
        out.push((host.to_string(), port));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn masters_from_cluster_nodes() {
        let nodes = "\
07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@40002,host2 master - 0 1426238316232 2 connected 5461-10922
2921 127.0.0.1:30004@40004 slave 07c3 0 1426238318243 1 connected
6ec2 127.0.0.1:30003@40003 master,fail - 0 1426238317741 3 connected
aaaa :30005@40005 master - 0 0 4 connected 10923-16383
";
        assert_eq!(
            super::cluster_masters(nodes, "10.0.0.1"),
            vec![("10.0.0.1".to_string(), 30005), ("127.0.0.1".to_string(), 30001), ("127.0.0.1".to_string(), 30002)]
        );
    }
}
