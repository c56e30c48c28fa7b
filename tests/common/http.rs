//! A tiny HTTP client for tests and benchmarks, so they need no HTTP client crate.

/// A minimal HTTP/1.1 POST over a raw socket; returns the status code and body.
pub async fn http_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    post(url, headers, body, false).await
}

/// [`http_post`] with the body sent `Transfer-Encoding: chunked` (64 KiB chunks), announcing no length: for a
/// server limit that must hold while streaming, not only against `Content-Length`.
#[allow(dead_code, reason = "the benchmarks include this file and only post with a length")]
pub async fn http_post_chunked(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    post(url, headers, body, true).await
}

async fn post(url: &str, headers: &[(&str, &str)], body: &[u8], chunked: bool) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(authority).await.expect("connect");
    let framing = match chunked {
        true => "Transfer-Encoding: chunked".to_string(),
        false => format!("Content-Length: {}", body.len()),
    };
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {authority}\r\n{framing}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    // A server may answer early (413 for a body over its limit) and stop reading: what it answered counts, not
    // whether all of the body went out.
    let _ = match chunked {
        false => stream.write_all(body).await,
        true => {
            let mut framed = Vec::with_capacity(body.len() + 1024);
            for chunk in body.chunks(64 * 1024) {
                framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                framed.extend_from_slice(chunk);
                framed.extend_from_slice(b"\r\n");
            }
            framed.extend_from_slice(b"0\r\n\r\n");
            stream.write_all(&framed).await
        }
    };
    let mut resp = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&resp).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
