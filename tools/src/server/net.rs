//! Connections: an acceptor hands each new socket to one of `threads` event loops (mio,
//! epoll underneath), which read frames and answer them in rounds: the single-record
//! commands that arrived on a loop's connections together go to the engine together
//! (`answer_round`), everything else is answered frame by frame (`respond`).
//!
//! Limits (named in `Server`): at most `connections_max` connections (more are closed at
//! once), frames of at most `frame_bytes_max` bytes (a larger one gets PARAMETER and the
//! connection closes), connections idle for `idle_timeout_s` are closed (0 = never). A
//! frame that does not decode gets PARAMETER; nothing is written for it.
//!
//! Replies are written before a connection's next frame is answered: one request at a
//! time per connection, as the clients use them. A reply write waits (poll, bounded by
//! `REPLY_STALL_MAX`) when the client's socket buffer is full, so a big scan streams at
//! the client's pace. The commands that may take long (`takes_long`: UDF calls, batches,
//! scans, truncates, compressed requests) are not answered on the loop: the connection
//! leaves the loop for a worker thread (`Workers`), which answers that frame and sends
//! the connection back (with a wake-up), so the loop's other connections never wait
//! behind a UDF call or a slow scan reader. Cost: two channel sends and a wake-up.

use super::counters::Origin;
use super::record::{code, Command};
use super::wire::*;
use super::{batch, info, record, scan, udf, Namespace, Server};
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

/// A connection lent to a worker to answer its first frame (`total` bytes, of `kind`).
struct Job {
    token: Token,
    connection: Connection,
    kind: u8,
    total: usize,
    home: Home,
}

/// Where a worker sends a connection back: its loop's channel and waker. `keep_open`
/// false means the loop closes it.
#[derive(Clone)]
struct Home {
    back: mpsc::Sender<(Token, Connection, bool)>,
    waker: Arc<Waker>,
}

/// The worker threads and the queue they take jobs from.
struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(server: &Arc<Server>) -> io::Result<Workers> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let mut handles = Vec::new();
        for i in 0..server.workers.max(1) {
            let (server, queue) = (server.clone(), queue.clone());
            let handle = std::thread::Builder::new().name(format!("spike-work-{i}")).spawn(move || loop {
                // The lock is held only to take a job, never while answering one.
                let job = match queue.lock() {
                    Ok(queue) => queue.recv(),
                    Err(_) => return,
                };
                let Ok(mut job) = job else { return };
                let keep_open = answer_first(&server, &mut job.connection, job.kind, job.total);
                // A loop that has stopped drops the connection, which closes it.
                if job.home.back.send((job.token, job.connection, keep_open)).is_ok() {
                    let _ = job.home.waker.wake();
                }
            })?;
            handles.push(handle);
        }
        Ok(Workers { jobs: Some(jobs), handles })
    }

    /// Finishes the jobs in hand and stops the threads.
    fn stop(mut self) {
        self.jobs = None;
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Serves until `stop` is set, then finishes the requests in hand and returns.
pub fn serve(server: Arc<Server>, listener: std::net::TcpListener, stop: Arc<AtomicBool>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let workers = Workers::start(&server)?;
    let runner = start_job_runner(&server)?;
    server.build_kept_indexes();
    let mut loops = Vec::new();
    let mut handles = Vec::new();
    for i in 0..server.threads.max(1) {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (send, receive) = mpsc::channel::<TcpStream>();
        let (back, returned) = mpsc::channel();
        let jobs = workers.jobs.clone().ok_or_else(|| io::Error::other("workers stopped"))?;
        let lend = Lend { jobs, home: Home { back, waker: waker.clone() }, returned };
        let (server, stop) = (server.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name(format!("spike-net-{i}"))
            .spawn(move || event_loop(&server, poll, receive, lend, &stop))?;
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
    log::info!("stopping: no new connections; finishing the requests in hand, then closing the namespaces");
    drop(loops);
    for handle in handles {
        let _ = handle.join();
    }
    workers.stop();
    // Background jobs end at their next chunk; what they wrote is durable, and how far
    // each got is logged.
    server.jobs.shut_down();
    let _ = runner.join();
    Ok(())
}

/// The thread that runs background jobs and index builds (`jobs`), one at a time, in the
/// order queued.
fn start_job_runner(server: &Arc<Server>) -> io::Result<std::thread::JoinHandle<()>> {
    let queue = server.jobs.attach();
    let server = server.clone();
    let sweep_every = (server.index_sweep_s > 0).then(|| Duration::from_secs(server.index_sweep_s));
    std::thread::Builder::new().name("spike-jobs".to_string()).spawn(move || {
        let mut next_sweep = sweep_every.map(|every| Instant::now() + every);
        loop {
            // Tasks as they come; between them, at the sweep interval, the expired records'
            // entries leave the secondary indexes.
            let wait = next_sweep
                .map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            match queue.recv_timeout(wait) {
                Ok(task) => super::jobs::run(&server, task),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if let (Some(at), Some(every)) = (next_sweep, sweep_every) {
                if Instant::now() >= at {
                    server.namespaces.iter().for_each(|ns| super::sindex::sweep(ns, None));
                    next_sweep = Some(Instant::now() + every);
                }
            }
        }
    })
}

/// A loop's side of the workers: where it sends jobs, and where connections come back.
struct Lend {
    jobs: mpsc::Sender<Job>,
    home: Home,
    returned: mpsc::Receiver<(Token, Connection, bool)>,
}

fn event_loop(
    server: &Server,
    mut poll: Poll,
    incoming: mpsc::Receiver<TcpStream>,
    lend: Lend,
    stop: &AtomicBool,
) {
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
        let mut ready = Vec::new();
        while let Ok((token, mut connection, keep_open)) = lend.returned.try_recv() {
            // Bytes that came while a worker had it raised no event the loop could act on.
            if keep_open && read_available(server, &mut connection, &mut chunk) {
                connections.insert(token, connection);
                ready.push(token);
            } else {
                let _ = poll.registry().deregister(&mut connection.stream);
                server.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        for event in events.iter() {
            let token = event.token();
            let Some(connection) = connections.get_mut(&token) else { continue };
            if read_available(server, connection, &mut chunk) {
                ready.push(token);
            } else {
                close(server, &mut poll, &mut connections, token);
            }
        }
        while !ready.is_empty() {
            ready = answer_round(server, &mut poll, &mut connections, &ready, &lend);
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

/// Reads what arrived into the connection's buffer; false closes the connection.
/// `chunk` is the loop's read buffer (`READ_CHUNK` bytes, allocated once: zeroing it per
/// event cost 3% of the server's CPU).
fn read_available(server: &Server, connection: &mut Connection, chunk: &mut [u8]) -> bool {
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
    true
}

/// What `answer_frames` left a connection at.
enum Next {
    /// Every whole frame is answered; the rest waits for more bytes.
    Idle,
    /// The first frame (`total` bytes) is a single-record command, left to be gathered
    /// with other connections'.
    Gathered {
        total: usize,
    },
    /// The first frame may take long: a worker answers it.
    Lent {
        kind: u8,
        total: usize,
    },
    Close,
}

/// Answers the whole frames at the front of the connection's buffer, up to the first
/// single-record command, which it leaves for the loop to send to the engine together
/// with its other connections' (device reads in flight together, one durability wait,
/// instead of one at a time: at 32 clients this halved the server's CPU per read).
fn answer_frames(server: &Server, connection: &mut Connection) -> Next {
    loop {
        if connection.buf.len() < PROTO_HEADER_SIZE {
            return Next::Idle;
        }
        let header = proto_header(&connection.buf);
        let total = frame_len(&connection.buf);
        if header.version != PROTO_VERSION
            || !(1..=4).contains(&header.kind)
            || total > server.frame_bytes_max
        {
            log::debug!("closing a connection: bad or oversized frame header {header:?}");
            let _ = write_reply(connection, &error_reply(code::PARAMETER));
            return Next::Close;
        }
        if connection.buf.len() < total {
            return Next::Idle;
        }
        let body = &connection.buf[PROTO_HEADER_SIZE..total];
        if header.kind == TYPE_MSG && decode_message(body).is_ok_and(|m| gatherable(server, &m).is_some()) {
            return Next::Gathered { total };
        }
        if takes_long(header.kind, body) {
            return Next::Lent { kind: header.kind, total };
        }
        if !answer_first(server, connection, header.kind, total) {
            return Next::Close;
        }
    }
}

/// Whether a frame may keep whoever answers it busy for long: a UDF call (up to 1 s), a
/// batch, a scan, a truncate (a walk of the namespace), a compressed request.
fn takes_long(kind: u8, body: &[u8]) -> bool {
    match kind {
        TYPE_COMPRESSED => true,
        TYPE_INFO => body.windows(8).any(|w| w == b"truncate"),
        TYPE_MSG => decode_message(body).is_ok_and(|m| {
            m.header.info1 & INFO1_BATCH != 0
                || m.field(FIELD_DIGEST).is_none()
                || m.field(FIELD_UDF_PACKAGE).is_some()
        }),
        _ => false,
    }
}

/// A single-record command that can be gathered with other connections' commands
/// (`record::is_gatherable`): its namespace and the command.
fn gatherable<'s, 'm>(server: &'s Server, message: &'m Message<'m>) -> Option<(&'s Namespace, Command<'m>)> {
    if message.header.info1 & INFO1_BATCH != 0 || message.field(FIELD_UDF_PACKAGE).is_some() {
        return None;
    }
    let digest = message.field(FIELD_DIGEST)?.try_into().ok()?;
    let ns = server.namespace(message.field(FIELD_NAMESPACE)?)?;
    let command = Command {
        header: message.header,
        set: message.field(FIELD_SET).unwrap_or(&[]),
        key: message.field(FIELD_KEY),
        digest,
        ops: &message.ops,
        filter: message.field(FIELD_FILTER),
    };
    record::is_gatherable(&command).then_some((ns, command))
}

/// A frame taken out of its connection's buffer while its read is gathered.
struct Gathered {
    token: Token,
    buf: Vec<u8>,
    total: usize,
}

/// One round over the connections in `ready`: answers their frames, sends the
/// single-record commands among them to the engine together, writes those replies.
/// Returns the connections that had one answered, whose buffers may hold more frames.
fn answer_round(
    server: &Server,
    poll: &mut Poll,
    connections: &mut HashMap<Token, Connection>,
    ready: &[Token],
    lend: &Lend,
) -> Vec<Token> {
    let mut gathered = Vec::new();
    for &token in ready {
        let Some(connection) = connections.get_mut(&token) else { continue };
        match answer_frames(server, connection) {
            Next::Idle => {}
            Next::Gathered { total } => {
                gathered.push(Gathered { token, buf: std::mem::take(&mut connection.buf), total })
            }
            Next::Lent { kind, total } => {
                let Some(connection) = connections.remove(&token) else { continue };
                let job = Job { token, connection, kind, total, home: lend.home.clone() };
                if let Err(mpsc::SendError(job)) = lend.jobs.send(job) {
                    // No workers (they stopped): the loop answers it itself.
                    let mut connection = job.connection;
                    let keep_open = answer_first(server, &mut connection, kind, total);
                    connections.insert(token, connection);
                    if !keep_open {
                        close(server, poll, connections, token);
                    }
                }
            }
            Next::Close => close(server, poll, connections, token),
        }
    }
    let replies = answer_gathered(server, &gathered);
    let mut answered = Vec::with_capacity(gathered.len());
    for (mut frame, reply) in gathered.into_iter().zip(replies) {
        let Some(connection) = connections.get_mut(&frame.token) else { continue };
        frame.buf.drain(..frame.total);
        connection.buf = frame.buf;
        if write_reply(connection, &reply).is_ok() {
            answered.push(frame.token);
        } else {
            close(server, poll, connections, frame.token);
        }
    }
    answered
}

/// The replies to gathered commands, in their order: one `execute_many` per namespace.
fn answer_gathered(server: &Server, gathered: &[Gathered]) -> Vec<Vec<u8>> {
    let messages: Vec<Option<Message>> =
        gathered.iter().map(|g| decode_message(&g.buf[PROTO_HEADER_SIZE..g.total]).ok()).collect();
    let reads: Vec<Option<(&Namespace, Command)>> =
        messages.iter().map(|m| m.as_ref().and_then(|m| gatherable(server, m))).collect();
    // A frame that was gatherable when gathered is so still (the same bytes decode
    // the same way); PARAMETER stands for the impossible.
    let mut replies = vec![error_reply(code::PARAMETER); gathered.len()];
    for ns in &server.namespaces {
        let picked: Vec<usize> = (0..reads.len())
            .filter(|&i| reads[i].as_ref().is_some_and(|(read_ns, _)| std::ptr::eq(*read_ns, ns)))
            .collect();
        if picked.is_empty() {
            continue;
        }
        let commands: Vec<Command> =
            picked.iter().filter_map(|&i| reads[i].as_ref().map(|(_, c)| *c)).collect();
        let outcomes = record::execute_many(ns, &commands, Origin::Client);
        for ((&i, command), outcome) in picked.iter().zip(&commands).zip(outcomes) {
            replies[i] = single_reply(&command.header, &outcome);
        }
    }
    replies
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

/// Answers the frame of `kind` at the front of the connection's buffer (`total` bytes)
/// and drops it from there; false closes the connection. The buffer is lent to the
/// request, so the frame is not copied.
fn answer_first(server: &Server, connection: &mut Connection, kind: u8, total: usize) -> bool {
    let buf = std::mem::take(&mut connection.buf);
    let keep_open = answer(server, connection, kind, &buf[PROTO_HEADER_SIZE..total]);
    connection.buf = buf;
    connection.buf.drain(..total);
    keep_open
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
        return batch::execute(server, &message, send).is_ok();
    }
    let Some(digest) = message.field(FIELD_DIGEST) else {
        return scan::execute(server, &message, body, send).is_ok();
    };
    let outcome = match (message.field(FIELD_NAMESPACE).and_then(|n| server.namespace(n)), digest.try_into())
    {
        (None, _) => record::Outcome::code(code::NAMESPACE),
        (_, Err(_)) => record::Outcome::code(code::PARAMETER),
        (Some(ns), Ok(digest)) => {
            let set = message.field(FIELD_SET).unwrap_or(&[]);
            let key = message.field(FIELD_KEY);
            let filter = message.field(FIELD_FILTER);
            let command = Command { header: h, set, key, digest, ops: &message.ops, filter };
            match udf_call(&message) {
                Some(call) => {
                    let source = server.catalog.udf_source(call.module);
                    record::execute_udf(ns, source, &command, &call, Origin::Client)
                }
                None => record::execute(ns, &command, Origin::Client),
            }
        }
    };
    if outcome.code != code::OK && outcome.code != code::KEY_NOT_FOUND {
        let ops: Vec<(u8, u8)> = message.ops.iter().map(|op| (op.code, op.particle)).collect();
        let info = (h.info1, h.info2, h.info3);
        log::debug!("result {} for info bits {info:?}, ops (code, particle) {ops:?}", outcome.code);
    }
    send(&single_reply(&h, &outcome)).is_ok()
}

/// The UDF call a message's fields name, if any (a missing function or argument list is
/// an empty one, which the call then reports).
pub fn udf_call<'m>(message: &Message<'m>) -> Option<udf::Call<'m>> {
    Some(udf::Call {
        module: message.field(FIELD_UDF_PACKAGE)?,
        function: message.field(FIELD_UDF_FUNCTION).unwrap_or(&[]),
        args: message.field(FIELD_UDF_ARGLIST).unwrap_or(&[0x90]),
    })
}

/// The reply frame to a single-record command with header `h`.
fn single_reply(h: &MsgHeader, outcome: &record::Outcome) -> Vec<u8> {
    let mut reply = Reply::default();
    let info1 = if outcome.bins.is_empty() { h.info1 & INFO1_NOBINDATA } else { 0 };
    record::write_outcome(&mut reply, outcome, info1, 0);
    reply.finish()
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
