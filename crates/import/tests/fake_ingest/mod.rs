//! A scripted stand-in for the ingest role's `POST /v1/readings`: just enough HTTP/1.1 to answer one request per
//! connection with a status and body chosen by the test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Decides the answer to request number `n` (0-based) carrying `readings`: a status and a JSON body.
pub(crate) type Script = dyn Fn(usize, &[Value]) -> (u16, String) + Send + Sync;

/// A fake ingest listening on a random local port until dropped.
pub(crate) struct FakeIngest {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub(crate) url: String,
    /// Readings of every request answered 200 or 422.
    answered: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl FakeIngest {
    /// Starts a fake that answers as `script` says.
    pub(crate) async fn start(
        script: impl Fn(usize, &[Value]) -> (u16, String) + Send + Sync + 'static,
    ) -> FakeIngest {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let server = tokio::spawn(serve(
            listener,
            script,
            Arc::clone(&answered),
            Arc::clone(&requests),
        ));
        FakeIngest {
            url,
            answered,
            requests,
            server,
        }
    }

    /// A fake that accepts every reading.
    pub(crate) async fn accepting() -> FakeIngest {
        FakeIngest::start(|_, readings| {
            (
                200,
                format!(r#"{{"accepted":{},"rejected":[]}}"#, readings.len()),
            )
        })
        .await
    }

    /// Readings of every request answered 200 or 422, in arrival order.
    pub(crate) fn answered(&self) -> Vec<Value> {
        self.answered.lock().expect("not poisoned").clone()
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeIngest {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(
    listener: TcpListener,
    script: Arc<Script>,
    answered: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut stream, _)) = listener.accept().await {
        let (script, answered, requests) = (
            Arc::clone(&script),
            Arc::clone(&answered),
            Arc::clone(&requests),
        );
        connections.spawn(async move {
            let Some(body) = read_request(&mut stream).await else {
                return;
            };
            let readings: Vec<Value> =
                serde_json::from_slice(&body).expect("a JSON array of readings");
            let n = requests.fetch_add(1, Ordering::SeqCst);
            let (status, reply) = script(n, &readings);
            if status == 200 || status == 422 {
                answered.lock().expect("not poisoned").extend(readings);
            }
            write_response(stream, status, &reply).await;
        });
    }
}

/// Reads one request and returns its body.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 64 * 1024];
    let header_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end + 4;
        }
        let n = read_some(stream, &mut chunk).await?;
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = read_some(stream, &mut chunk).await?;
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some(buffer[header_end..header_end + length].to_vec())
}

/// Reads at least one byte, or `None` at end of stream or on error.
async fn read_some(stream: &mut TcpStream, chunk: &mut [u8]) -> Option<usize> {
    match stream.read(chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

async fn write_response(mut stream: TcpStream, status: u16, body: &str) {
    let response = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Drain whatever the client still sends so that closing does not reset the connection under it.
    let mut rest = [0_u8; 1024];
    while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
