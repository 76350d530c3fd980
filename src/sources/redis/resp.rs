//! The direct reader of stream pages: `XRANGE` is written to a connection of its own and its RESP2 reply is kept
//! as the bytes that came in, framed as they arrive and then written as JSON lines straight from those bytes.
//! The client library reads every reply into a tree of values, one allocation per field and per value; at
//! hundreds of thousands of entries that tree was the largest cost of a stream export not inherent to the
//! evidence (docs/performance.md). Plain TCP and Unix sockets are read this way; TLS is read through the library.
//!
//! The connection sends nothing but its handshake (`AUTH`, `SELECT`) and the `XRANGE` commands it is given.

use std::{io, time::Duration};

use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection: {0}")]
    Io(#[source] io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Bytes that are not the RESP2 reply expected.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The server's error reply (`-ERR ...`).
    #[error("{0}")]
    Server(String),
    /// Reopening the node's client connection failed.
    #[error(transparent)]
    Client(redis::RedisError),
}

impl Error {
    /// The connection is gone (worth the node's one reconnect), rather than refused by the server.
    pub fn is_connection(&self) -> bool {
        match self {
            Error::Io(_) | Error::Timeout(_) | Error::Closed => true,
            Error::Client(e) => super::link::is_connection_error(e),
            Error::Protocol(_) | Error::Server(_) => false,
        }
    }
}

fn protocol(what: impl Into<String>) -> Error {
    Error::Protocol(what.into())
}

/// One element of a reply, read in place.
#[derive(Debug, PartialEq)]
enum Item<'a> {
    Bulk(&'a [u8]),
    Simple(&'a [u8]),
    Int(i64),
    Error(&'a [u8]),
    /// A null bulk string or null array.
    Nil,
    /// An array header: this many elements follow.
    Array(usize),
}

/// Reads the element at `*pos` of `buf` and moves past it (past an array's header only). `Ok(None)`: `buf` ends
/// before the element does.
fn next_item<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<Item<'a>>, Error> {
    let start = *pos;
    let Some(len) = memchr::memchr(b'\n', &buf[start..]) else {
        // A header or a simple string this long is no reply of Redis's: refuse it rather than wait for more.
        return if buf.len() - start > MAX_LINE { Err(protocol("a line longer than any reply's")) } else { Ok(None) };
    };
    if len > MAX_LINE {
        return Err(protocol("a line longer than any reply's"));
    }
    let after = start + len + 1;
    let line = buf[start..start + len].strip_suffix(b"\r").ok_or_else(|| protocol("a line not ended by CRLF"))?;
    let (&kind, rest) = line.split_first().ok_or_else(|| protocol("an empty line"))?;
    let item = match kind {
        b'$' => match number(rest)? {
            n if n < 0 => Item::Nil,
            n => {
                let end = usize::try_from(n)
                    .ok()
                    .and_then(|n| after.checked_add(n))
                    .ok_or_else(|| protocol("a bulk string's length"))?;
                if buf.len() < end.saturating_add(2) {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(protocol("a bulk string not ended by CRLF"));
                }
                *pos = end + 2;
                return Ok(Some(Item::Bulk(&buf[after..end])));
            }
        },
        b'*' => match number(rest)? {
            n if n < 0 => Item::Nil,
            n => Item::Array(usize::try_from(n).map_err(|_| protocol("an array's length"))?),
        },
        b':' => Item::Int(number(rest)?),
        b'+' => Item::Simple(rest),
        b'-' => Item::Error(rest),
        other => return Err(protocol(format!("RESP2 type byte {:?}", other as char))),
    };
    *pos = after;
    Ok(Some(item))
}

/// The longest line read: a header is a few bytes, a server's error message a few hundred.
const MAX_LINE: usize = 64 << 10;

fn number(digits: &[u8]) -> Result<i64, Error> {
    std::str::from_utf8(digits).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        let shown: String = String::from_utf8_lossy(digits).chars().take(32).collect();
        protocol(format!("{shown:?} is not a number"))
    })
}

/// Finds where a reply ends as its bytes arrive, without reading any of it twice, and where each element of its
/// outer array starts (a page's entries).
#[derive(Default)]
struct Framer {
    pos: usize,
    /// Elements still to come in each array being read, outermost first.
    open: Vec<usize>,
    entries: Vec<usize>,
}

impl Framer {
    fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
        self.entries.clear();
    }

    /// Whether `buf[..self.pos]` is now one whole reply.
    fn advance(&mut self, buf: &[u8]) -> Result<bool, Error> {
        loop {
            let start = self.pos;
            let Some(item) = next_item(buf, &mut self.pos)? else { return Ok(false) };
            if self.open.len() == 1 {
                self.entries.push(start);
            }
            match item {
                Item::Array(n) if n > 0 => self.open.push(n),
                _ => {
                    // An element is complete, and with it every array it was the last element of.
                    loop {
                        let Some(left) = self.open.last_mut() else { return Ok(true) };
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// One `XRANGE` reply as received.
#[derive(Default)]
pub struct Page {
    buf: Vec<u8>,
    framer: Framer,
}

impl Page {
    /// Entries in the page.
    pub fn len(&self) -> usize {
        self.framer.entries.len()
    }

    /// The id of entry `i`, as text (an id is ASCII).
    pub fn id(&self, i: usize) -> Result<String, Error> {
        let mut pos = self.framer.entries[i];
        match (self.item(&mut pos)?, self.item(&mut pos)?) {
            (Item::Array(_), Item::Bulk(id)) => Ok(String::from_utf8_lossy(id).into_owned()),
            _ => Err(protocol("an XRANGE entry that does not start with its id")),
        }
    }

    fn item(&self, pos: &mut usize) -> Result<Item<'_>, Error> {
        next_item(&self.buf[..self.framer.pos], pos)?.ok_or_else(|| protocol("a reply cut short"))
    }

    /// Appends every entry as `{"id": ..., "fields": [[name, value], ...]}` and a newline: the same bytes the
    /// client path writes (`value::EntryRef`).
    pub fn write_jsonl(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        for &start in &self.framer.entries {
            let mut pos = start;
            let Item::Array(2) = self.item(&mut pos)? else {
                return Err(protocol("an XRANGE entry that is not [id, fields]"));
            };
            let Item::Bulk(id) = self.item(&mut pos)? else { return Err(protocol("an XRANGE entry id")) };
            out.extend_from_slice(b"{\"id\":");
            json(out, &String::from_utf8_lossy(id));
            out.extend_from_slice(b",\"fields\":[");
            match self.item(&mut pos)? {
                Item::Array(n) => {
                    for i in 0..n {
                        out.extend_from_slice(match (i % 2, i) {
                            (0, 0) => &b"["[..],
                            (0, _) => b",[",
                            _ => b",",
                        });
                        self.write_value(out, &mut pos, 0)?;
                        if i % 2 == 1 || i + 1 == n {
                            out.push(b']');
                        }
                    }
                }
                Item::Nil => {}
                _ => return Err(protocol("an XRANGE entry's fields")),
            }
            out.extend_from_slice(b"]}\n");
        }
        Ok(())
    }

    /// One value as the client path's JSON has it: text, `{"base64"}` for binary, numbers, null, arrays (a
    /// stream's values are strings; arrays nested deeper than [`MAX_DEPTH`] are refused, not recursed into).
    fn write_value(&self, out: &mut Vec<u8>, pos: &mut usize, depth: usize) -> Result<(), Error> {
        match self.item(pos)? {
            Item::Bulk(b) => json(out, &value::Bytes(b)),
            Item::Simple(s) => json(out, &String::from_utf8_lossy(s)),
            Item::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Item::Nil => out.extend_from_slice(b"null"),
            Item::Array(_) if depth == MAX_DEPTH => return Err(protocol("arrays nested too deep")),
            Item::Array(n) => {
                out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_value(out, pos, depth + 1)?;
                }
                out.push(b']');
            }
            Item::Error(e) => return Err(Error::Server(String::from_utf8_lossy(e).into_owned())),
        }
        Ok(())
    }

    /// The server's error, when the whole reply is one.
    fn error(&self) -> Option<Error> {
        let mut pos = 0;
        match next_item(&self.buf[..self.framer.pos], &mut pos) {
            Ok(Some(Item::Error(e))) => Some(Error::Server(String::from_utf8_lossy(e).into_owned())),
            _ => None,
        }
    }
}

const MAX_DEPTH: usize = 16;

fn json(out: &mut Vec<u8>, v: &impl serde::Serialize) {
    // Writing a string or a byte string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection of the direct reader.
pub struct Direct {
    stream: Box<dyn Stream>,
    response_timeout: Duration,
}

const READ_AHEAD: usize = 64 << 10;

impl Direct {
    /// Connects and authenticates as the node's settings say: plain TCP or a Unix socket (what
    /// `Node::reads_directly` allows).
    pub async fn open(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, Error> {
        let connect = async {
            let stream: Box<dyn Stream> = match info.addr() {
                ConnectionAddr::Tcp(host, port) => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(Error::Io)?;
                    s.set_nodelay(true).map_err(Error::Io)?;
                    Box::new(s)
                }
                #[cfg(unix)]
                ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await.map_err(Error::Io)?),
                // Not a lost connection: nothing to reconnect for.
                _ => return Err(protocol(format!("{} is read through the client", super::link::label(info)))),
            };
            Ok(stream)
        };
        let stream =
            tokio::time::timeout(connect_timeout, connect).await.map_err(|_| Error::Timeout("connecting"))??;
        let mut conn = Direct { stream, response_timeout };
        let settings = info.redis_settings();
        let mut page = Page::default();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            conn.send(&auth.get_packed_command()).await?;
            match conn.receive(&mut page).await {
                // Redis before 6 has no users: AUTH takes the password alone (the client library does the same).
                Err(Error::Server(m)) if settings.username().is_some() && m.contains("wrong number of arguments") => {
                    conn.send(&redis::cmd("AUTH").arg(password).get_packed_command()).await?;
                    conn.receive(&mut page).await?;
                }
                other => other?,
            }
        }
        if settings.db() != 0 {
            conn.send(&redis::cmd("SELECT").arg(settings.db()).get_packed_command()).await?;
            conn.receive(&mut page).await?;
        }
        Ok(conn)
    }

    pub async fn send(&mut self, packed: &[u8]) -> Result<(), Error> {
        let write = async {
            self.stream.write_all(packed).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.response_timeout, write)
            .await
            .map_err(|_| Error::Timeout("sending"))?
            .map_err(Error::Io)
    }

    /// Reads one reply into `page`; a server's error reply is returned as [`Error::Server`].
    pub async fn receive(&mut self, page: &mut Page) -> Result<(), Error> {
        page.buf.clear();
        page.framer.reset();
        let deadline = tokio::time::Instant::now() + self.response_timeout;
        while !page.framer.advance(&page.buf)? {
            if page.buf.capacity() - page.buf.len() < READ_AHEAD {
                page.buf.reserve(READ_AHEAD.max(page.buf.len()));
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut page.buf))
                .await
                .map_err(|_| Error::Timeout("waiting for a reply"))?
                .map_err(Error::Io)?;
            if read == 0 {
                return Err(Error::Closed);
            }
        }
        if page.framer.pos != page.buf.len() {
            return Err(protocol("bytes after the reply that nothing asked for"));
        }
        match page.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::redis::value::EntryRef;

    fn page_of(bytes: &[u8]) -> Page {
        let mut page = Page { buf: bytes.to_vec(), framer: Framer::default() };
        assert!(page.framer.advance(&page.buf).unwrap(), "one whole reply");
        assert_eq!(page.framer.pos, bytes.len());
        page
    }

    /// An XRANGE reply with what a stream can hold: repeated names, binary values, an empty value, JSON that needs
    /// escaping, and an entry whose fields are null.
    const REPLY: &[u8] = b"*3\r\n\
        *2\r\n$3\r\n1-1\r\n*6\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\na\r\n$2\r\n\xfe\x00\r\n$1\r\nb\r\n$0\r\n\r\n\
        *2\r\n$15\r\n1700000000000-7\r\n*2\r\n$6\r\nreason\r\n$21\r\n{\"a\":\"q\\\"\n\tx\",\"\xc3\xa9\":1}\r\n\
        *2\r\n$3\r\n9-9\r\n*-1\r\n";

    #[test]
    fn pages_are_written_exactly_as_the_client_path_writes_them() {
        let page = page_of(REPLY);
        assert_eq!(page.len(), 3);
        assert_eq!(page.id(0).unwrap(), "1-1");
        assert_eq!(page.id(2).unwrap(), "9-9");
        let mut direct = Vec::new();
        page.write_jsonl(&mut direct).unwrap();

        let redis::Value::Array(entries) = redis::parse_redis_value(REPLY).unwrap() else { panic!("an array") };
        let mut client = Vec::new();
        for e in &entries {
            serde_json::to_writer(&mut client, &EntryRef(e)).unwrap();
            client.push(b'\n');
        }
        assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&client));
        let first: serde_json::Value = serde_json::from_slice(direct.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first["fields"], serde_json::json!([["b", "2"], ["a", {"base64": "/gA="}], ["b", ""]]));
    }

    #[test]
    fn a_reply_is_complete_only_at_its_last_byte_however_it_arrives() {
        for split in 0..REPLY.len() {
            let mut framer = Framer::default();
            assert!(!framer.advance(&REPLY[..split]).unwrap(), "incomplete at {split}");
            assert!(framer.advance(REPLY).unwrap(), "complete after the rest, split at {split}");
            assert_eq!(framer.pos, REPLY.len());
            assert_eq!(framer.entries.len(), 3, "split at {split}");
        }
        // Byte by byte.
        let mut framer = Framer::default();
        let done: Vec<usize> = (1..=REPLY.len()).filter(|&n| framer.advance(&REPLY[..n]).unwrap()).collect();
        assert_eq!(done, vec![REPLY.len()]);
    }

    #[test]
    fn empty_and_null_replies_and_server_errors() {
        for empty in [&b"*0\r\n"[..], b"*-1\r\n"] {
            let page = page_of(empty);
            assert_eq!(page.len(), 0);
            let mut out = Vec::new();
            page.write_jsonl(&mut out).unwrap();
            assert!(out.is_empty());
        }
        let page = page_of(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
        assert!(matches!(page.error(), Some(Error::Server(m)) if m.starts_with("WRONGTYPE")));
    }

    /// Redis before 6 refuses `AUTH user password` as the wrong number of arguments: the password alone is sent
    /// then, as the client library does. (No Redis 5 here: a listener answers as one would.)
    #[tokio::test]
    async fn a_server_without_users_is_authenticated_with_the_password_alone() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for reply in [&b"-ERR wrong number of arguments for 'auth' command\r\n"[..], b"+OK\r\n"] {
                let mut page = Page::default();
                while !page.framer.advance(&page.buf).unwrap() {
                    assert!(s.read_buf(&mut page.buf).await.unwrap() > 0);
                }
                seen.push(String::from_utf8_lossy(&page.buf).into_owned());
                s.write_all(reply).await.unwrap();
            }
            seen
        });
        let info =
            redis::IntoConnectionInfo::into_connection_info(format!("redis://old-user:pw-5f1c@127.0.0.1:{port}/0"))
                .unwrap();
        Direct::open(&info, Duration::from_secs(5), Duration::from_secs(5)).await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(seen[0], "*3\r\n$4\r\nAUTH\r\n$8\r\nold-user\r\n$7\r\npw-5f1c\r\n");
        assert_eq!(seen[1], "*2\r\n$4\r\nAUTH\r\n$7\r\npw-5f1c\r\n");
    }

    #[test]
    fn malformed_bytes_are_named_not_panicked_on() {
        for (bytes, says) in [
            (&b"*1\r\n$3\r\nabcd\r\n"[..], "not ended by CRLF"),
            (b"*x\r\n", "is not a number"),
            (b"%1\r\n", "type byte"),
            (b"*1\n", "CRLF"),
            (b"$99999999999999999999\r\n", "is not a number"),
        ] {
            let err = Framer::default().advance(bytes).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        // A line with no end is refused once it is longer than any reply's, not waited on for ever.
        let endless = [b"+".as_slice(), &vec![b'x'; MAX_LINE + 1]].concat();
        let err = Framer::default().advance(&endless).unwrap_err().to_string();
        assert!(err.contains("longer than any reply"), "{err}");
        assert!(!Framer::default().advance(&endless[..1000]).unwrap(), "a short partial line is waited on");
        // Framed, but not the shape of XRANGE.
        let page = page_of(b"*1\r\n*1\r\n$3\r\n1-1\r\n");
        let err = page.write_jsonl(&mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("not [id, fields]"), "{err}");
        // A hostile server's nesting is refused, not recursed into until the stack runs out.
        let mut deep = b"*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n".to_vec();
        deep.extend(b"*1\r\n".repeat(100_000));
        deep.extend(b":1\r\n");
        let err = page_of(&deep).write_jsonl(&mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("nested too deep"), "{err}");
    }
}
