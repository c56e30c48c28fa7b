//! The HTTP side: routes, sign-in, the checks every request passes, and server-sent events.
//!
//! Every page is a GET without side effects; the only POSTs are sign-in and sign-out, which refuse requests
//! from other sites (Origin / Sec-Fetch-Site), and the cookie is `HttpOnly; SameSite=Strict`. Responses forbid
//! framing and any script or style not served from here (Content-Security-Policy). `ferry ui` also refuses a
//! `Host` that is not loopback, so a web page cannot reach it through DNS rebinding.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use maud::Markup;

use super::auth::{Access, Viewer, request_token};
use super::data::{Data, GROUP};
use super::pages::{self, Chrome, DiffItem};

/// The sign-in cookie (a Kubernetes bearer token).
pub const COOKIE: &str = "ferry-token";
const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("live.js");

/// How the UI is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `ferry ui`: the caller's kubeconfig reads; only loopback hosts; no sign-in.
    Local,
    /// `ferry run --ui-addr`: Ferry's identity reads, for viewers who sign in with a token and only what
    /// SubjectAccessReviews allow them.
    Cluster,
}

pub struct Ui {
    pub mode: Mode,
    pub data: Data,
}

type Shared = Arc<Ui>;

pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ns/{ns}", get(pipeline))
        .route("/ns/{ns}/environments/{name}", get(environment))
        .route("/ns/{ns}/promotions/{name}", get(promotion))
        .route("/ns/{ns}/promotions/{name}/diff", get(diff))
        .route("/live/{ns}", get(live))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route(
            "/static/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .route(
            "/static/live.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT) }),
        )
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

/// Serves the UI on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ui: Arc<Ui>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ui)).with_graceful_shutdown(shutdown).await
}

/// Host check (local mode), POST origin check, and the security headers on every response.
async fn guard(State(ui): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if ui.mode == Mode::Local && !loopback_host(headers) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "ferry ui answers only on 127.0.0.1 and localhost\n",
        )
            .into_response();
    }
    if request.method() == http::Method::POST && !same_origin(headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The Host header names a loopback address (any port).
pub fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// A POST comes from our own pages: browsers say so with Sec-Fetch-Site, or with an Origin equal to the
/// Host. A request with neither (curl) is not a browser's cross-site request.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let bare = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .unwrap_or_default();
            !host.is_empty() && bare == host
        }
    }
}

/// A response that is a page with a status.
fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// 403, saying only what was refused: no breadcrumbs from the URL, no live updates.
fn refused(chrome: &Chrome, what: &str) -> Response {
    let bare = Chrome {
        user: chrome.user.clone(),
        ..Chrome::default()
    };
    page(
        StatusCode::FORBIDDEN,
        pages::message_page(&bare, "Forbidden", &format!("You may not list {what}.")),
    )
}

fn failed(chrome: &Chrome, error: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %error, "ui request failed");
    page(
        StatusCode::BAD_GATEWAY,
        pages::message_page(chrome, "Something went wrong", &error.to_string()),
    )
}

/// Who asks: Local in local mode; in the cluster, the owner of the request's token, or a redirect to sign in.
async fn viewer(ui: &Ui, headers: &HeaderMap) -> Result<Viewer, Response> {
    if ui.mode == Mode::Local {
        return Ok(Viewer::Local);
    }
    let Some(token) = request_token(headers) else {
        return Err(Redirect::to("/login").into_response());
    };
    match ui.data.auth.authenticate(&token).await {
        Ok(Some(user)) => Ok(Viewer::User(user)),
        Ok(None) => Err(page(
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some("That token is not valid (anymore). Sign in again.")),
        )),
        Err(e) => Err(failed(&Chrome::default(), e)),
    }
}

fn chrome(viewer: &Viewer, live: Option<&str>, crumbs: Vec<(String, String)>) -> Chrome {
    Chrome {
        user: viewer.name().map(str::to_string),
        live: live.map(str::to_string),
        crumbs,
    }
}

fn ns_crumb(ns: &str) -> (String, String) {
    (ns.to_string(), format!("/ns/{ns}"))
}

/// Checks one access; a refusal or an error becomes the response.
async fn require(ui: &Ui, viewer: &Viewer, chrome: &Chrome, access: Access, what: &str) -> Result<(), Response> {
    match ui.data.auth.allowed(viewer, &access).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(refused(chrome, what)),
        Err(e) => Err(failed(chrome, e)),
    }
}

async fn may(ui: &Ui, viewer: &Viewer, access: Access) -> bool {
    ui.data.auth.allowed(viewer, &access).await.unwrap_or(false)
}

async fn index(State(ui): State<Shared>, headers: HeaderMap) -> Response {
    let viewer = match viewer(&ui, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for env in ui.data.envs().await {
        *counts.entry(env.namespace().unwrap_or_default()).or_default() += 1;
    }
    let mut visible = Vec::new();
    for (ns, count) in counts {
        if may(&ui, &viewer, Access::list(GROUP, "environments", &ns)).await {
            visible.push((ns, count));
        }
    }
    page(
        StatusCode::OK,
        pages::index_page(&chrome(&viewer, None, vec![]), &visible),
    )
}

async fn pipeline(State(ui): State<Shared>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    let viewer = match viewer(&ui, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let chrome = chrome(&viewer, Some(&ns), vec![ns_crumb(&ns)]);
    if let Err(r) = require(
        &ui,
        &viewer,
        &chrome,
        Access::list(GROUP, "environments", &ns),
        &format!("Environments in namespace {ns}"),
    )
    .await
    {
        return r;
    }
    let envs = ui.data.envs_in(&ns).await;
    let promotions = if may(&ui, &viewer, Access::list(GROUP, "promotions", &ns)).await {
        Some(ui.data.promotions_in(&ns).await)
    } else {
        None
    };
    let commits = ui
        .data
        .commits_for(&viewer, &envs, promotions.as_deref().unwrap_or(&[]))
        .await;
    page(
        StatusCode::OK,
        pages::pipeline_page(&chrome, &ns, &envs, promotions.as_deref(), &commits, Timestamp::now()),
    )
}

async fn environment(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let viewer = match viewer(&ui, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let crumbs = vec![ns_crumb(&ns), (name.clone(), format!("/ns/{ns}/environments/{name}"))];
    let chrome = chrome(&viewer, Some(&ns), crumbs);
    if let Err(r) = require(
        &ui,
        &viewer,
        &chrome,
        Access::list(GROUP, "environments", &ns),
        &format!("Environments in namespace {ns}"),
    )
    .await
    {
        return r;
    }
    let Some(env) = ui.data.envs_in(&ns).await.into_iter().find(|e| e.name_any() == name) else {
        return page(
            StatusCode::NOT_FOUND,
            pages::message_page(
                &chrome,
                "Not found",
                &format!("No Environment {name} in namespace {ns}."),
            ),
        );
    };
    let promotions = if may(&ui, &viewer, Access::list(GROUP, "promotions", &ns)).await {
        let all = ui.data.promotions_in(&ns).await;
        Some(
            all.into_iter()
                .filter(|p| p.spec.environment == name)
                .collect::<Vec<_>>(),
        )
    } else {
        None
    };
    let events = if may(&ui, &viewer, Access::list("events.k8s.io", "events", &ns)).await {
        ui.data.events(&ns, &name).await.ok()
    } else {
        None
    };
    let tree = ui.data.tree(&viewer, &env).await;
    let commits = ui
        .data
        .commits_for(
            &viewer,
            std::slice::from_ref(&env),
            promotions.as_deref().unwrap_or(&[]),
        )
        .await;
    page(
        StatusCode::OK,
        pages::environment_page(
            &chrome,
            &ns,
            &env,
            promotions.as_deref(),
            Some(&tree),
            events.as_deref(),
            &commits,
            Timestamp::now(),
        ),
    )
}

/// The viewer, the page chrome, and the Promotion, once the viewer may list Promotions in `ns`.
async fn promotion_for(
    ui: &Ui,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
    diff: bool,
) -> Result<(Viewer, Chrome, ferry_api::Promotion), Response> {
    let viewer = viewer(ui, headers).await?;
    let mut crumbs = vec![ns_crumb(ns), (name.to_string(), format!("/ns/{ns}/promotions/{name}"))];
    if diff {
        crumbs.push(("diff".into(), format!("/ns/{ns}/promotions/{name}/diff")));
    }
    let chrome = chrome(&viewer, (!diff).then_some(ns), crumbs);
    require(
        ui,
        &viewer,
        &chrome,
        Access::list(GROUP, "promotions", ns),
        &format!("Promotions in namespace {ns}"),
    )
    .await?;
    match ui
        .data
        .promotions_in(ns)
        .await
        .into_iter()
        .find(|p| p.name_any() == name)
    {
        Some(p) => Ok((viewer, chrome, p)),
        None => Err(page(
            StatusCode::NOT_FOUND,
            pages::message_page(&chrome, "Not found", &format!("No Promotion {name} in namespace {ns}.")),
        )),
    }
}

use crate::api as ferry_api;

async fn promotion(State(ui): State<Shared>, headers: HeaderMap, Path((ns, name)): Path<(String, String)>) -> Response {
    let (viewer, chrome, p) = match promotion_for(&ui, &headers, &ns, &name, false).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let events = if may(&ui, &viewer, Access::list("events.k8s.io", "events", &ns)).await {
        ui.data.events(&ns, &name).await.ok()
    } else {
        None
    };
    let commits = ui.data.commits_for(&viewer, &[], std::slice::from_ref(&p)).await;
    page(
        StatusCode::OK,
        pages::promotion_page(&chrome, &ns, &p, events.as_deref(), &commits, Timestamp::now()),
    )
}

async fn diff(State(ui): State<Shared>, headers: HeaderMap, Path((ns, name)): Path<(String, String)>) -> Response {
    let (viewer, chrome, p) = match promotion_for(&ui, &headers, &ns, &name, true).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The dry run reads the Environment's objects: as much as listing Environments lets one see of them.
    if let Err(r) = require(
        &ui,
        &viewer,
        &chrome,
        Access::list(GROUP, "environments", &ns),
        &format!("Environments in namespace {ns}"),
    )
    .await
    {
        return r;
    }
    let result: Result<Vec<DiffItem>, String> = ui.data.diff(&viewer, &p).await.map_err(|e| e.to_string());
    page(
        StatusCode::OK,
        pages::diff_page(&chrome, &p, &p.spec.revision, result.as_deref().map_err(|e| e.as_str())),
    )
}

/// Server-sent events: a `change` whenever an Environment, Promotion or GitRepository of `ns` changes.
async fn live(State(ui): State<Shared>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    let viewer = match viewer(&ui, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !may(&ui, &viewer, Access::list(GROUP, "environments", &ns)).await {
        return (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    }
    let changes = tokio_stream_of(ui.data.changes.subscribe(), ns);
    Sse::new(changes)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn tokio_stream_of(
    rx: tokio::sync::broadcast::Receiver<super::data::Change>,
    ns: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(change) => Some((change, rx)),
            // Missed some: one change tells the page to refresh, which is all a lag needs.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((super::data::Change::default(), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
    .filter(move |c| std::future::ready(c.namespace.is_empty() || c.namespace == ns))
    // No names in the event: the viewer may list Environments here but not necessarily the changed kind.
    .map(|_| Ok(Event::default().event("change").data("refresh")))
}

async fn login_form(State(ui): State<Shared>) -> Response {
    if ui.mode == Mode::Local {
        return Redirect::to("/").into_response();
    }
    page(StatusCode::OK, pages::login_page(None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// The sign-in cookie carrying `token` (empty and expired to sign out). `Secure` when the browser reached the
/// view over HTTPS, which behind a TLS-terminating proxy or Ingress only `X-Forwarded-Proto` tells: the token
/// must then never travel over plain HTTP. Without it (`ferry ui` on loopback, port-forwards) a `Secure` cookie
/// would not be sent back by every browser, so it is left off.
fn session_cookie(token: &str, headers: &HeaderMap) -> String {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let max_age = if token.is_empty() { 0 } else { 28800 };
    let secure = if https { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

async fn login(State(ui): State<Shared>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    if ui.mode == Mode::Local {
        return Redirect::to("/").into_response();
    }
    // A token is base64url/JWT text: anything else could not be a cookie value anyway.
    let plausible = !token.is_empty()
        && token.len() <= 16 * 1024
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'='));
    if !plausible {
        return page(
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some("That is not a token.")),
        );
    }
    match ui.data.auth.authenticate(token).await {
        Ok(Some(_)) => {
            let cookie = session_cookie(token, &headers);
            match HeaderValue::from_str(&cookie) {
                Ok(value) => (
                    StatusCode::SEE_OTHER,
                    [
                        (header::SET_COOKIE, value),
                        (header::LOCATION, HeaderValue::from_static("/")),
                    ],
                )
                    .into_response(),
                Err(_) => page(
                    StatusCode::UNAUTHORIZED,
                    pages::login_page(Some("That is not a token.")),
                ),
            }
        }
        Ok(None) => page(
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some("The API server did not accept that token.")),
        ),
        Err(e) => failed(&Chrome::default(), e),
    }
}

async fn logout(headers: HeaderMap) -> Response {
    let cookie = session_cookie("", &headers);
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static("")),
            ),
            (header::LOCATION, HeaderValue::from_static("/login")),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn the_sign_in_cookie_is_secure_behind_https_and_always_http_only_and_strict() {
        let plain = session_cookie("tok", &h(&[]));
        assert_eq!(
            plain,
            "ferry-token=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=28800"
        );
        let behind_tls = session_cookie("tok", &h(&[("x-forwarded-proto", "https")]));
        assert!(behind_tls.ends_with("; Secure"), "{behind_tls}");
        assert!(session_cookie("tok", &h(&[("x-forwarded-proto", "HTTPS, http")])).ends_with("; Secure"));
        assert!(!session_cookie("tok", &h(&[("x-forwarded-proto", "http")])).contains("Secure"));
        let out = session_cookie("", &h(&[("x-forwarded-proto", "https")]));
        assert!(
            out.starts_with("ferry-token=; ") && out.contains("Max-Age=0; Secure"),
            "{out}"
        );
    }

    #[test]
    fn only_loopback_hosts_reach_the_local_ui() {
        assert!(loopback_host(&h(&[("host", "127.0.0.1:8000")])));
        assert!(loopback_host(&h(&[("host", "localhost:8000")])));
        assert!(loopback_host(&h(&[("host", "[::1]:8000")])));
        assert!(!loopback_host(&h(&[("host", "evil.example:8000")])));
        assert!(!loopback_host(&h(&[("host", "127.0.0.1.evil.example")])));
        assert!(!loopback_host(&h(&[])));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&h(&[("origin", "http://ui:8000"), ("host", "ui:8000")])));
        assert!(!same_origin(&h(&[("origin", "http://evil"), ("host", "ui:8000")])));
        assert!(
            same_origin(&h(&[("host", "ui:8000")])),
            "no Origin: not a browser's cross-site form"
        );
    }
}
