//! What both kinds of connection to a node (the client's, [`super::conn`], and the direct reader's,
//! [`super::resp`]) need to know of one: how it is named, and whether an error lost it. Kept apart so the direct
//! reader depends on nothing of the client's connections.

use redis::{ConnectionAddr, ConnectionInfo};

/// `host:port` of a connection, for labels and file names.
pub fn label(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(h, p) | ConnectionAddr::TcpTls { host: h, port: p, .. } => format!("{h}:{p}"),
        ConnectionAddr::Unix(path) => path.display().to_string(),
        other => format!("{other:?}"),
    }
}

/// Whether an error means the connection is gone (worth one reconnect), rather than a refusal by the server.
pub fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}
