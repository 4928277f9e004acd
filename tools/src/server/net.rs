//! Connections: an acceptor hands each new socket to one of `threads` event loops (mio,
//! epoll underneath), which read frames, answer each in turn and write the reply.
//!
//! Limits (named in `Server`): at most `connections_max` connections (more are closed at
//! once), frames of at most `frame_bytes_max` bytes (a larger one gets PARAMETER and the
//! connection closes), connections idle for `idle_timeout_s` are closed (0 = never). A
//! frame that does not decode gets PARAMETER; nothing is written for it.
//!
//! Replies are written before the next frame is read: one request at a time per
//! connection, as the clients use them. A reply write waits (poll, bounded by
//! `REPLY_STALL_MAX`) when the client's socket buffer is full, so a big scan streams at
//! the client's pace; meanwhile that loop's other connections wait, which is why there
//! are several loops.

use super::counters::Origin;
use super::record::{code, Command};
use super::wire::*;
use super::{batch, info, record, scan, Server};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a reply may wait for a client that reads nothing before the connection closes.
pub const REPLY_STALL_MAX: Duration = Duration::from_secs(30);
/// How often loops look at the stop flag and reap idle connections.
const TICK: Duration = Duration::from_millis(100);
const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    last_active: Instant,
    local_addr: String,
}

/// Serves until `stop` is set, then finishes the requests in hand and returns.
pub fn serve(server: Arc<Server>, listener: std::net::TcpListener, stop: Arc<AtomicBool>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut loops = Vec::new();
    let mut handles = Vec::new();
    for i in 0..server.threads.max(1) {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (send, receive) = mpsc::channel::<TcpStream>();
        let (server, stop) = (server.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name(format!("spike-net-{i}"))
            .spawn(move || event_loop(&server, poll, receive, &stop))?;
        loops.push((send, waker));
        handles.push(handle);
    }
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut next = 0;
    while !stop.load(Ordering::Acquire) {
        if let Err(err) = poll.poll(&mut events, Some(TICK)) {
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if server.connections.load(Ordering::Relaxed) >= server.connections_max {
                        log::warn!("refusing a connection: {} open, the limit", server.connections_max);
                        continue;
                    }
                    server.connections.fetch_add(1, Ordering::Relaxed);
                    let (send, waker) = &loops[next % loops.len()];
                    next += 1;
                    if send.send(stream).is_ok() {
                        let _ = waker.wake();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    log::warn!("accept failed: {err}");
                    break;
                }
            }
        }
    }
    drop(loops);
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

fn event_loop(server: &Server, mut poll: Poll, incoming: mpsc::Receiver<TcpStream>, stop: &AtomicBool) {
    let mut connections: HashMap<Token, Connection> = HashMap::new();
    let mut events = Events::with_capacity(256);
    let mut next_token = 0usize;
    let mut last_reap = Instant::now();
    let mut chunk = vec![0u8; READ_CHUNK];
    while !stop.load(Ordering::Acquire) {
        if let Err(err) = poll.poll(&mut events, Some(TICK)) {
            if err.kind() != io::ErrorKind::Interrupted {
                log::error!("event loop stops: {err}");
                return;
            }
        }
        while let Ok(mut stream) = incoming.try_recv() {
            let token = Token(next_token);
            next_token = (next_token + 1) % (usize::MAX - 2);
            let _ = stream.set_nodelay(true);
            let local_addr = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
            if poll.registry().register(&mut stream, token, Interest::READABLE).is_ok() {
                let connection =
                    Connection { stream, buf: Vec::new(), last_active: Instant::now(), local_addr };
                connections.insert(token, connection);
            } else {
                server.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        for event in events.iter() {
            let token = event.token();
            let Some(connection) = connections.get_mut(&token) else { continue };
            if !serve_readable(server, connection, &mut chunk) {
                close(server, &mut poll, &mut connections, token);
            }
        }
        if server.idle_timeout_s > 0 && last_reap.elapsed() >= Duration::from_secs(1) {
            last_reap = Instant::now();
            let idle = Duration::from_secs(server.idle_timeout_s);
            let stale: Vec<Token> =
                connections.iter().filter(|(_, c)| c.last_active.elapsed() > idle).map(|(t, _)| *t).collect();
            for token in stale {
                close(server, &mut poll, &mut connections, token);
            }
        }
    }
    for token in connections.keys().copied().collect::<Vec<_>>() {
        close(server, &mut poll, &mut connections, token);
    }
}

fn close(server: &Server, poll: &mut Poll, connections: &mut HashMap<Token, Connection>, token: Token) {
    if let Some(mut connection) = connections.remove(&token) {
        let _ = poll.registry().deregister(&mut connection.stream);
        server.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes one `read` call takes from a socket.
const READ_CHUNK: usize = 64 * 1024;

/// Reads what arrived and answers every whole frame; false closes the connection.
/// `chunk` is the loop's read buffer (`READ_CHUNK` bytes, allocated once: zeroing it per
/// event cost 3% of the server's CPU).
fn serve_readable(server: &Server, connection: &mut Connection, chunk: &mut [u8]) -> bool {
    loop {
        match connection.stream.read(chunk) {
            Ok(0) => return false,
            Ok(n) => {
                connection.buf.extend_from_slice(&chunk[..n]);
                // A short read drained the socket: edge-triggered readiness reports the
                // next bytes, so the extra read that would only say WouldBlock is skipped.
                if n < chunk.len() {
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
        if connection.buf.len() >= PROTO_HEADER_SIZE && frame_len(&connection.buf) > server.frame_bytes_max {
            break;
        }
    }
    connection.last_active = Instant::now();
    loop {
        if connection.buf.len() < PROTO_HEADER_SIZE {
            return true;
        }
        let header = proto_header(&connection.buf);
        let total = frame_len(&connection.buf);
        if header.version != PROTO_VERSION
            || !(1..=4).contains(&header.kind)
            || total > server.frame_bytes_max
        {
            log::debug!("closing a connection: bad or oversized frame header {header:?}");
            let _ = write_reply(connection, &error_reply(code::PARAMETER));
            return false;
        }
        if connection.buf.len() < total {
            return true;
        }
        // The buffer is lent to the request (no copy of the frame), then the answered
        // frame is dropped from its front.
        let buf = std::mem::take(&mut connection.buf);
        let keep_open = answer(server, connection, header.kind, &buf[PROTO_HEADER_SIZE..total]);
        connection.buf = buf;
        connection.buf.drain(..total);
        if !keep_open {
            return false;
        }
    }
}

/// The proto header at the start of `buf` (which holds at least its 8 bytes).
fn proto_header(buf: &[u8]) -> ProtoHeader {
    let mut bytes = [0u8; PROTO_HEADER_SIZE];
    bytes.copy_from_slice(&buf[..PROTO_HEADER_SIZE]);
    ProtoHeader::decode(&bytes)
}

fn frame_len(buf: &[u8]) -> usize {
    let header = proto_header(buf);
    PROTO_HEADER_SIZE.saturating_add(usize::try_from(header.body_bytes).unwrap_or(usize::MAX))
}

/// Answers one frame; false closes the connection.
fn answer(server: &Server, connection: &mut Connection, kind: u8, body: &[u8]) -> bool {
    let local_addr = connection.local_addr.clone();
    let mut send = |bytes: &[u8]| write_reply(connection, bytes);
    respond(server, kind, body, &local_addr, &mut send)
}

/// Answers one frame of type `kind` with `body` (the bytes after its proto header),
/// handing every reply frame to `send`; false means "close the connection". No socket
/// is needed, so tests and the `server_request` fuzz target call it directly.
pub fn respond(
    server: &Server,
    kind: u8,
    body: &[u8],
    local_addr: &str,
    send: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> bool {
    match kind {
        TYPE_INFO => send(&info_frame(&info::answer(server, body, local_addr))).is_ok(),
        TYPE_ADMIN => {
            // Security is not supported (as in Aerospike Community): result 51.
            let mut reply = ProtoHeader::encode(TYPE_ADMIN, 16).to_vec();
            reply.extend_from_slice(&[0, 51]);
            reply.resize(PROTO_HEADER_SIZE + 16, 0);
            send(&reply).is_ok()
        }
        TYPE_COMPRESSED => match super::compression::inflate(body, server.frame_bytes_max) {
            Ok(inner) if inner.len() >= PROTO_HEADER_SIZE && inner[1] == TYPE_MSG => {
                message(server, &inner[PROTO_HEADER_SIZE..], send)
            }
            _ => send(&error_reply(code::PARAMETER)).is_ok(),
        },
        TYPE_MSG => message(server, body, send),
        _ => {
            let _ = send(&error_reply(code::PARAMETER));
            false
        }
    }
}

fn message(server: &Server, body: &[u8], send: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> bool {
    let message = match decode_message(body) {
        Ok(message) => message,
        Err(err) => {
            log::debug!("malformed message: {err}");
            return send(&error_reply(code::PARAMETER)).is_ok();
        }
    };
    let h = message.header;
    if h.info1 & INFO1_BATCH != 0 {
        let mut reply = Reply::default();
        batch::execute(server, &message, &mut reply);
        return send(&reply.finish()).is_ok();
    }
    let Some(digest) = message.field(FIELD_DIGEST) else {
        return scan::execute(server, &message, send).is_ok();
    };
    let outcome = match (message.field(FIELD_NAMESPACE).and_then(|n| server.namespace(n)), digest.try_into())
    {
        (None, _) => record::Outcome::code(code::NAMESPACE),
        (_, Err(_)) => record::Outcome::code(code::PARAMETER),
        (Some(_), _)
            if message.field(FIELD_FILTER).is_some() || message.field(FIELD_UDF_PACKAGE).is_some() =>
        {
            record::Outcome::code(code::UNSUPPORTED_FEATURE)
        }
        (Some(ns), Ok(digest)) => {
            let set = message.field(FIELD_SET).unwrap_or(&[]);
            let key = message.field(FIELD_KEY);
            let command = Command { header: h, set, key, digest, ops: &message.ops };
            record::execute(ns, &command, Origin::Client)
        }
    };
    if outcome.code != code::OK && outcome.code != code::KEY_NOT_FOUND {
        let ops: Vec<(u8, u8)> = message.ops.iter().map(|op| (op.code, op.particle)).collect();
        let info = (h.info1, h.info2, h.info3);
        log::debug!("result {} for info bits {info:?}, ops (code, particle) {ops:?}", outcome.code);
    }
    let mut reply = Reply::default();
    let info1 = if outcome.bins.is_empty() { h.info1 & INFO1_NOBINDATA } else { 0 };
    record::write_outcome(&mut reply, &outcome, info1, 0);
    send(&reply.finish()).is_ok()
}

fn error_reply(code: u8) -> Vec<u8> {
    let mut reply = Reply::default();
    reply.message(&MsgHeader { result_code: code, info3: INFO3_LAST, ..MsgHeader::default() });
    reply.finish()
}

/// Writes all of `bytes`, waiting for the socket to drain at most `REPLY_STALL_MAX`
/// without progress.
fn write_reply(connection: &mut Connection, mut bytes: &[u8]) -> io::Result<()> {
    let mut stalled_since = None;
    while !bytes.is_empty() {
        match connection.stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                stalled_since = None;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > REPLY_STALL_MAX {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                wait_writable(&connection.stream);
            }
            Err(err) => return Err(err),
        }
    }
    connection.last_active = Instant::now();
    Ok(())
}

fn wait_writable(stream: &TcpStream) {
    let mut pollfd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe {
        libc::poll(&mut pollfd, 1, 100);
    }
}
