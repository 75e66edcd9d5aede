//! The HTTP/1.1 server of `routemon watch`: `/metrics`, `/healthz` and `/`.
//!
//! hyper serves the connections (keep-alive, `GET` and `HEAD`; other methods get
//! 405 with `Allow: GET, HEAD`; the query string is ignored). What keeps hostile
//! clients from starving a scraper:
//!
//! - a connection must send a complete request head of at most
//!   [`MAX_REQUEST_HEAD`] bytes (larger: 431) within [`HEADER_TIMEOUT`], for its
//!   first request and every later one on it (an idle keep-alive connection is
//!   closed after the same time);
//! - a response write that makes no progress for [`io::WRITE_TIMEOUT`] fails the
//!   connection (clients that do not read);
//! - the kernel's send buffer of a connection is [`SEND_BUFFER`];
//! - connections live at most [`MAX_CONNECTION_AGE`] (then close after their
//!   current response);
//! - [`admission`] bounds the connections: [`MAX_PENDING`] without a complete first
//!   head, [`MAX_ACTIVE`] with one, and sheds idle, head-less or stalled ones before
//!   it refuses a request with 503 and `Retry-After`.
//!
//! [`stats::HttpStats`] counts what was shed and every response's status; the
//! daemon exports them. The exposition is rendered by the daemon's loop (a
//! [`Query`]) and gzip-coded here when the client accepts it.

pub mod admission;
pub mod io;
pub mod negotiate;
pub mod stats;

use std::{convert::Infallible, pin::pin, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};

use self::{
    admission::Admission,
    io::{ConnIo, FirstHead},
    stats::{HttpStats, ShedReason},
};
use tokio_rustls::TlsAcceptor;

use crate::{watch::metrics::Format, web_config::WebConfig};

/// Largest request head (request line and headers) served: 8 KiB; larger heads
/// are answered with 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send a complete request head, and the longest a
/// keep-alive connection may wait idle for its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of a connection: it closes after the response in progress.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// Connections that have not yet sent a complete first request head.
pub const MAX_PENDING: usize = 512;
/// Kernel send buffer of a connection (`SO_SNDBUF`; the kernel doubles it). Without
/// it loopback autotuning grows it to megabytes: a client that does not read would
/// hold that much kernel memory and never stall a write.
pub const SEND_BUFFER: usize = 64 * 1024;
/// Connections that have, and are served.
pub const MAX_ACTIVE: usize = 128;
/// `Retry-After` of a 503, in seconds.
pub const RETRY_AFTER_SECONDS: u32 = 1;
/// Time the daemon has to answer a scrape before the server answers 503.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a refusal or a 431 may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a refusal, how long (and how many bytes of) what the client still sends
/// is read and dropped: closing with unread data would reset the connection, and
/// the reset can destroy the refusal before the client reads it.
const REFUSAL_LINGER: (Duration, usize) = (Duration::from_millis(500), 256 * 1024);

/// A request the daemon's main loop answers.
pub enum Query {
    /// A reading of the counters for `/metrics`: the reply renders it.
    Metrics(oneshot::Sender<Exposition>),
    /// Reply to show the loop is alive.
    Health(oneshot::Sender<()>),
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Metrics(_) => "Query::Metrics",
            Self::Health(_) => "Query::Health",
        })
    }
}

/// The daemon's answer to a scrape: it renders the exposition in a format, and runs
/// on the server's thread, so the daemon's loop only reads the counters (one
/// answer is shared by every scrape it serves, and renders once per format).
pub type Exposition = Arc<dyn Fn(Format) -> Bytes + Send + Sync>;

/// What every connection task shares.
#[derive(Debug)]
struct Shared {
    queries: mpsc::Sender<Query>,
    stats: Arc<HttpStats>,
    admission: Arc<Admission>,
    /// TLS and basic authentication (`--web-config-file`).
    web: Option<Arc<WebConfig>>,
    /// One bcrypt check at a time: an attacker's guesses cost at most one core's
    /// share of the blocking pool, and never the server's thread.
    bcrypt: Arc<tokio::sync::Semaphore>,
}

/// Runs [`serve`] on a thread of its own, with a runtime of its own: reading
/// requests, TLS, authentication and gzip never run on the daemon's loop, which
/// only renders the exposition (at most once per its render interval).
pub fn spawn(
    listener: TcpListener,
    queries: mpsc::Sender<Query>,
    stats: Arc<HttpStats>,
    web: Option<Arc<WebConfig>>,
) -> std::io::Result<()> {
    // A tokio listener belongs to the runtime that made it: hand over the socket.
    let listener = listener.into_std()?;
    std::thread::Builder::new()
        .name("routemon-http".into())
        .spawn(move || {
            yield_to_the_daemon_loop();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!("the metrics server's runtime did not start: {err}");
                    return;
                }
            };
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, queries, stats, web).await,
                    Err(err) => tracing::error!("the metrics listener: {err}"),
                }
            });
        })?;
    Ok(())
}

/// How much nicer than the daemon's loop the server's thread runs.
const SERVER_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority by [`SERVER_NICENESS`] (Linux
/// applies `setpriority(PRIO_PROCESS, 0, …)` to the calling thread only, and no
/// capability is needed to lower it): under a scrape storm the CPU goes to the
/// loop that follows netlink first, and the scrapes wait.
fn yield_to_the_daemon_loop() {
    // SAFETY: getpriority/setpriority on the calling thread; errno is reset first
    // because -1 is also a valid priority.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        if current == -1 && *libc::__errno_location() != 0 {
            return;
        }
        let nicer = (current + SERVER_NICENESS).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, 0, nicer) != 0 {
            tracing::debug!(
                "the metrics server's thread keeps its priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Accepts connections until the task is dropped, passing queries to `queries` and
/// counting into `stats`.
pub async fn serve(
    listener: TcpListener,
    queries: mpsc::Sender<Query>,
    stats: Arc<HttpStats>,
    web: Option<Arc<WebConfig>>,
) {
    serve_with_limits(listener, queries, stats, web, MAX_PENDING, MAX_ACTIVE).await;
}

/// [`serve`] with other pool sizes (the unit tests' small ones).
async fn serve_with_limits(
    listener: TcpListener,
    queries: mpsc::Sender<Query>,
    stats: Arc<HttpStats>,
    web: Option<Arc<WebConfig>>,
    max_pending: usize,
    max_active: usize,
) {
    let shared = Arc::new(Shared {
        queries,
        admission: Admission::new(max_pending, max_active, Arc::clone(&stats)),
        stats,
        web,
        bcrypt: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and the like: the pools are bounded below the usual
                // descriptor limit, so this is rare; wait for descriptors to free.
                tracing::warn!("accepting a metrics connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
            tracing::debug!(%peer, "setting SO_SNDBUF: {err}");
        }
        let pending = shared.admission.arrive();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(err) = connection(stream, pending, &shared).await {
                tracing::debug!(%peer, "metrics connection: {err}");
            }
        });
    }
}

/// Serves one connection: the TLS handshake when configured (within
/// [`HEADER_TIMEOUT`], shed like a slow head), then [`serve_stream`].
async fn connection(
    stream: TcpStream,
    pending: admission::Pending,
    shared: &Shared,
) -> std::io::Result<()> {
    let Some(tls) = shared.web.as_ref().and_then(|web| web.tls.clone()) else {
        return serve_stream(stream, pending, shared).await;
    };
    let tls = TlsAcceptor::from(tls);
    let handshake = tokio::select! {
        // Already counted by the admission policy.
        () = pending.shed() => return Ok(()),
        handshake = tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => serve_stream(stream, pending, shared).await,
        Ok(Err(err)) => {
            shared.stats.shed(ShedReason::TlsHandshake);
            tracing::debug!("TLS handshake failed: {err}");
            Ok(())
        }
        Err(_) => {
            shared.stats.shed(ShedReason::HeaderTimeout);
            Ok(())
        }
    }
}

/// Serves one connection's stream: its first head, its admission, then hyper.
async fn serve_stream<S>(
    mut stream: S,
    pending: admission::Pending,
    shared: &Shared,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = tokio::select! {
        // Already counted by the admission policy.
        () = pending.shed() => return Ok(()),
        head = tokio::time::timeout(HEADER_TIMEOUT, io::read_first_head(&mut stream)) => head,
    };
    let replay = match first {
        Err(_) => {
            shared.stats.shed(ShedReason::HeaderTimeout);
            return Ok(());
        }
        Ok(head) => match head? {
            FirstHead::Complete(replay) => replay,
            FirstHead::Closed => return Ok(()),
            FirstHead::Oversized => {
                shared.stats.shed(ShedReason::OversizedHead);
                return refuse(stream, shared, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
            }
        },
    };
    let active = match shared.admission.activate(pending) {
        Ok(active) => active,
        Err(_pending) => {
            shared.stats.shed(ShedReason::Overload);
            return refuse(stream, shared, StatusCode::SERVICE_UNAVAILABLE).await;
        }
    };
    let state = Arc::clone(active.state());
    let io = TokioIo::new(ConnIo::new(stream, replay, Arc::clone(&state)));
    let service = service_fn(|request| {
        let state = Arc::clone(&state);
        async move {
            let _busy = state.serving();
            let response = respond(&request, shared).await;
            shared.stats.response(response.status().as_u16());
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut aged = false;
    let mut age = pin!(tokio::time::sleep(MAX_CONNECTION_AGE));
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            // Already counted by the admission policy.
            () = state.shed.notified() => return Ok(()),
            () = age.as_mut(), if !aged => {
                aged = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    drop(active);
    match result {
        Ok(()) => Ok(()),
        Err(_) if state.has_write_timed_out() => {
            shared.stats.shed(ShedReason::WriteTimeout);
            Ok(())
        }
        Err(err) if err.is_timeout() => {
            // The header timer also ends idle keep-alive connections: only a head
            // begun and not finished counts.
            if state.has_partial_head() {
                shared.stats.shed(ShedReason::HeaderTimeout);
            }
            Ok(())
        }
        Err(err) if err.is_parse_too_large() => {
            // hyper answered 431.
            shared.stats.shed(ShedReason::OversizedHead);
            shared.stats.response(431);
            Ok(())
        }
        Err(err) if err.is_parse() => {
            // hyper answered 400 to a head it could not parse.
            shared.stats.response(400);
            Ok(())
        }
        Err(err) => Err(std::io::Error::other(err)),
    }
}

/// Answers a connection that is not served with `status` (431 or 503) and closes
/// it, bounded in time (see [`REFUSAL_LINGER`]).
async fn refuse<S>(mut stream: S, shared: &Shared, status: StatusCode) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared.stats.response(status.as_u16());
    let (body, retry) = if status == StatusCode::SERVICE_UNAVAILABLE {
        (
            "too many connections; retry later\n",
            format!("Retry-After: {RETRY_AFTER_SECONDS}\r\n"),
        )
    } else {
        ("request head too large\n", String::new())
    };
    let reply = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{retry}\
         Connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len(),
    );
    let write = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "writing a refusal"))??;
    let (linger, most) = REFUSAL_LINGER;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < most {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(linger, drain).await;
    Ok(())
}

/// The response to one request.
async fn respond(request: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if !authorized(request, shared).await {
        shared.stats.shed(ShedReason::Unauthorized);
        let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"routemon\""),
        );
        return response;
    }
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return close(response);
    }
    match request.uri().path() {
        "/metrics" => metrics(request, shared).await,
        "/healthz" => {
            let (reply, answer) = oneshot::channel();
            match ask(&shared.queries, Query::Health(reply), answer).await {
                Some(()) => text(StatusCode::OK, "ok\n"),
                None => unavailable("unhealthy\n"),
            }
        }
        "/" => {
            let mut response = text(
                StatusCode::OK,
                "<html><body><h1>routemon</h1><p><a href=\"/metrics\">/metrics</a> \
                 <a href=\"/healthz\">/healthz</a></p></body></html>\n",
            );
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics or /healthz\n",
        ),
    }
}

/// Whether the request's credentials satisfy the web configuration's users (every
/// path is protected, as the exporter toolkit does). Credentials not checked
/// before are checked with bcrypt on the blocking pool, one at a time.
async fn authorized(request: &Request<Incoming>, shared: &Shared) -> bool {
    let Some(web) = &shared.web else {
        return true;
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(known) = web.knows(header.as_deref()) {
        return known;
    }
    let Ok(_permit) = Arc::clone(&shared.bcrypt).acquire_owned().await else {
        return false;
    };
    let web = Arc::clone(web);
    tokio::task::spawn_blocking(move || web.authorize(header.as_deref()))
        .await
        .unwrap_or(false)
}

/// `/metrics`: the exposition in the negotiated format, gzip-coded when accepted.
async fn metrics(request: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let format = negotiate::format(header(header::ACCEPT));
    let gzip = negotiate::accepts_gzip(header(header::ACCEPT_ENCODING));
    let (reply, answer) = oneshot::channel();
    let Some(exposition) = ask(&shared.queries, Query::Metrics(reply), answer).await else {
        return unavailable("routemon is busy or stopping\n");
    };
    let text = exposition(format);
    let (body, coded) = if gzip {
        match negotiate::gzip(&text) {
            Ok(coded) => (Bytes::from(coded), true),
            Err(err) => {
                tracing::warn!("gzip-coding the exposition failed: {err}; sending it plain");
                (text, false)
            }
        }
    } else {
        (text, false)
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if coded {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

async fn ask<T>(
    queries: &mpsc::Sender<Query>,
    query: Query,
    answer: oneshot::Receiver<T>,
) -> Option<T> {
    queries.send(query).await.ok()?;
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .ok()?
        .ok()
}

/// A `text/plain` response.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 503 with `Retry-After`, closing the connection.
fn unavailable(body: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, body);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    close(response)
}

/// `response`, after which hyper closes the connection.
fn close(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Runs a future to completion on a fresh current-thread runtime (unit tests).
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// One `GET /metrics` with `Connection: close` from a blocking thread; the
    /// whole reply.
    fn get(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<String> {
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            reply
        })
    }

    /// With every active slot busy with a request (the daemon has not answered),
    /// a new request gets 503 with `Retry-After`, counted as overload; the busy
    /// ones are then served.
    #[test]
    fn a_request_finding_every_slot_busy_gets_503_with_retry_after() {
        block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let (queries, mut daemon) = mpsc::channel(16);
            let stats = Arc::new(HttpStats::default());
            tokio::spawn(serve_with_limits(
                listener,
                queries,
                Arc::clone(&stats),
                None,
                8,
                2,
            ));
            let busy = [get(addr), get(addr)];
            let mut held = Vec::new();
            for _ in 0..2 {
                match daemon.recv().await.expect("a query") {
                    Query::Metrics(reply) => held.push(reply),
                    Query::Health(_) => panic!("asked for /metrics"),
                }
            }
            let refused = get(addr).await.expect("client");
            assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
            assert!(refused.contains("\r\nRetry-After: 1\r\n"), "{refused}");
            for reply in held {
                let exposition: Exposition = Arc::new(|_| Bytes::from_static(b"up 1\n"));
                assert!(reply.send(exposition).is_ok(), "answer");
            }
            for client in busy {
                let served = client.await.expect("client");
                assert!(served.starts_with("HTTP/1.1 200 "), "{served}");
                assert!(served.ends_with("\r\n\r\nup 1\n"), "{served}");
            }
            assert!(stats.shed_counts().contains(&("overload", 1)));
            assert!(stats.response_counts().contains(&(503, 1)));
            assert!(stats.response_counts().contains(&(200, 2)));
        });
    }
}
