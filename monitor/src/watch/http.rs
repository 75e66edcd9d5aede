//! A minimal HTTP/1.1 server for `/metrics` and `/healthz`.
//!
//! It serves only `GET` (and `HEAD`) of those two paths, reads at most
//! [`MAX_REQUEST_HEAD`] bytes within [`READ_TIMEOUT`], answers each connection
//! once and closes it, and holds at most [`MAX_CONNECTIONS`] connections at a time
//! (more are closed at once), so slow or malformed clients cannot exhaust it.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
};

/// Largest request head read.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at the same time.
pub const MAX_CONNECTIONS: usize = 64;
/// Time the daemon has to answer a scrape before the server answers 503.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A request the daemon's main loop answers.
#[derive(Debug)]
pub enum Query {
    /// Render the exposition.
    Metrics(oneshot::Sender<String>),
    /// Reply to show the loop is alive.
    Health(oneshot::Sender<()>),
}

/// Accepts connections until the listener fails, passing queries to `queries`.
pub async fn serve(listener: TcpListener, queries: mpsc::Sender<Query>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!("accepting a metrics connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many metrics connections; closing this one");
            continue;
        };
        let queries = queries.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &queries).await {
                tracing::debug!(%peer, "metrics connection: {err}");
            }
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, queries: &mpsc::Sender<Query>) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(&mut stream, 431, "text/plain", "request too large\n", false).await;
        }
        Ok(Err(err)) => return Err(err),
        Err(_) => return respond(&mut stream, 408, "text/plain", "request timeout\n", false).await,
    };
    let mut parts = head.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            "only GET is served\n",
            false,
        )
        .await;
    }
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let (tx, rx) = oneshot::channel();
            let body = match ask(queries, Query::Metrics(tx), rx).await {
                Some(text) => text,
                None => {
                    return respond(
                        &mut stream,
                        503,
                        "text/plain",
                        "routemon is busy or stopping\n",
                        head_only,
                    )
                    .await;
                }
            };
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await
        }
        "/healthz" => {
            let (tx, rx) = oneshot::channel();
            match ask(queries, Query::Health(tx), rx).await {
                Some(()) => respond(&mut stream, 200, "text/plain", "ok\n", head_only).await,
                None => respond(&mut stream, 503, "text/plain", "unhealthy\n", head_only).await,
            }
        }
        "/" => {
            respond(
                &mut stream,
                200,
                "text/html; charset=utf-8",
                "<html><body><h1>routemon</h1><p><a href=\"/metrics\">/metrics</a> \
                 <a href=\"/healthz\">/healthz</a></p></body></html>\n",
                head_only,
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found; try /metrics or /healthz\n",
                head_only,
            )
            .await
        }
    }
}

async fn ask<T>(
    queries: &mpsc::Sender<Query>,
    query: Query,
    rx: oneshot::Receiver<T>,
) -> Option<T> {
    queries.send(query).await.ok()?;
    tokio::time::timeout(ANSWER_TIMEOUT, rx).await.ok()?.ok()
}

/// Reads until the end of the request head; returns its first line, or `None`
/// when it exceeds [`MAX_REQUEST_HEAD`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
    let line_end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    Ok(Some(
        String::from_utf8_lossy(&buf[..line_end])
            .trim_end()
            .to_owned(),
    ))
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status == 405 {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
