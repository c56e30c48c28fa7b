//! A real smart-HTTP git server for tests: `git http-backend` (CGI) behind a small hyper front end that checks
//! HTTP basic or bearer auth, optionally over TLS with a throw-away CA, and records every request so tests can
//! count fetches as the server saw them.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug)]
pub enum HttpAuth {
    None,
    Basic(String, String),
    Bearer(String),
}

pub struct GitHttpServer {
    pub base_url: String,
    /// `ca.crt` for the TLS server, if TLS is on.
    pub ca_pem: Option<String>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHttpServer {
    /// Serves every repo under `root` (the git daemon's base path) at `http(s)://127.0.0.1:<port>/<name>.git`.
    pub async fn start(root: PathBuf, auth: HttpAuth, tls: bool) -> GitHttpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (acceptor, ca_pem) = if tls {
            let (acceptor, ca) = tls_acceptor();
            (Some(acceptor), Some(ca))
        } else {
            (None, None)
        };
        let scheme = if tls { "https" } else { "http" };
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (root, auth, log, acceptor) = (root.clone(), auth.clone(), log.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, root.clone(), auth.clone(), log.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        GitHttpServer {
            base_url: format!("{scheme}://127.0.0.1:{port}"),
            ca_pem,
            requests,
            task,
        }
    }

    /// How many fetches (upload-pack ref advertisements) the server answered for `repo` (e.g. `x.git`).
    pub fn fetches(&self, repo: &str) -> usize {
        let want = format!("/{repo}/info/refs?service=git-upload-pack");
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("200 ") && r.ends_with(&want))
            .count()
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ferry test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let key = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_cert.pem())
}

fn authorized(req: &Request<Incoming>, auth: &HttpAuth) -> Option<String> {
    let header = req.headers().get("authorization").and_then(|h| h.to_str().ok());
    match auth {
        HttpAuth::None => Some("anonymous".to_string()),
        HttpAuth::Basic(user, pass) => {
            let encoded = header?.strip_prefix("Basic ")?;
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            (decoded == format!("{user}:{pass}").into_bytes()).then(|| user.clone())
        }
        HttpAuth::Bearer(token) => (header? == format!("Bearer {token}")).then(|| "token".to_string()),
    }
}

async fn handle(
    req: Request<Incoming>,
    root: PathBuf,
    auth: HttpAuth,
    log: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path_and_query = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let Some(user) = authorized(&req, &auth) else {
        log.lock().unwrap().push(format!("401 {path_and_query}"));
        let mut resp = Response::new(Full::new(Bytes::from_static(b"unauthorized")));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        let challenge = match auth {
            HttpAuth::Bearer(_) => "Bearer",
            _ => "Basic realm=\"git\"",
        };
        resp.headers_mut()
            .insert("www-authenticate", challenge.parse().unwrap());
        return Ok(resp);
    };
    log.lock().unwrap().push(format!("200 {path_and_query}"));
    Ok(cgi(req, root, user).await.unwrap_or_else(|e| {
        let mut resp = Response::new(Full::new(Bytes::from(e)));
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        resp
    }))
}

async fn cgi(req: Request<Incoming>, root: PathBuf, user: String) -> Result<Response<Full<Bytes>>, String> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, encoding, protocol) = (
        header("content-type"),
        header("content-encoding"),
        header("git-protocol"),
    );
    let body = req.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", encoding)
        .env("GIT_PROTOCOL", protocol)
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(&body).await.map_err(|e| e.to_string())?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .ok_or("no CGI header")?;
    let head = String::from_utf8_lossy(&raw[..split.0]).to_string();
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(&raw[split.0 + split.1..])));
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code: u16 = v.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    Ok(resp)
}
