//! The HTTP side: routes, sign-in, the checks every request passes, and server-sent events.
//!
//! Every page is a GET without side effects. The POSTs are sign-in and sign-out, which refuse requests from
//! other sites (Origin / Sec-Fetch-Site), and the diff's dry run (costly, and requests to the API server), which
//! also needs the session's CSRF token in its form and an Origin or Referer naming this Host ([`super::csrf`]);
//! the cookie is `HttpOnly; SameSite=Strict`. Responses forbid framing and any script or style not served from
//! here (Content-Security-Policy). `ferry ui` also refuses a `Host` that is not loopback, so a web page cannot
//! reach it through DNS rebinding.
//!
//! A live-update stream stays open for hours, so it does not rest on the check made when it opened: it asks
//! again every [`Ui::recheck`] (past the caches) and ends when the token or the right is gone.

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
use futures::Stream;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use maud::Markup;

use super::auth::{Access, Viewer, request_token};
use super::csrf::{Csrf, from_this_host};
use super::data::{Data, GROUP, LiveView};
use super::pages::{self, Chrome, DiffItem, Inventory};
use super::redact::Redactor;

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

/// How often an open live-update stream re-checks its viewer by default (`ferry run --ui-access-recheck`).
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(30);

pub struct Ui {
    pub mode: Mode,
    pub data: Data,
    /// How often an open live-update stream asks again whether its viewer's token and right still hold.
    pub recheck: Duration,
    csrf: Csrf,
}

impl Ui {
    /// The UI over `data`, with a fresh CSRF key; streams re-check their viewer every `recheck`.
    pub fn new(mode: Mode, data: Data, recheck: Duration) -> std::io::Result<Ui> {
        Ok(Ui {
            mode,
            data,
            recheck: recheck.max(Duration::from_millis(100)),
            csrf: Csrf::new()?,
        })
    }
}

type Shared = Arc<Ui>;

pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ns/{ns}", get(pipeline))
        .route("/ns/{ns}/environments/{name}", get(environment))
        .route("/ns/{ns}/promotions/{name}", get(promotion))
        .route("/ns/{ns}/promotions/{name}/diff", get(diff_form).post(diff_run))
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
    // Our own pages' requests say where they come from (the dry run's POST is checked on it); other sites
    // learn nothing.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
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
    let redact = ui.data.redactor(&viewer, &envs).await;
    let envs: Vec<_> = envs.into_iter().map(|e| redact.environment(e)).collect();
    let promotions = promotions.map(|ps| redacted_promotions(&redact, ps));
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
    let envs = ui.data.envs_in(&ns).await;
    let Some(env) = envs.iter().find(|e| e.name_any() == name).cloned() else {
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
    let live = ui.data.live_view(&viewer, &env).await;
    let tree = match live {
        LiveView::Shown => ui.data.tree(&viewer, &env).await,
        LiveView::NeedsSecret(_) => Vec::new(),
    };
    let commits = ui
        .data
        .commits_for(
            &viewer,
            std::slice::from_ref(&env),
            promotions.as_deref().unwrap_or(&[]),
        )
        .await;
    let redact = ui.data.redactor(&viewer, &envs).await;
    let env = redact.environment(env);
    let promotions = promotions.map(|ps| redacted_promotions(&redact, ps));
    let events = events.map(|es| redacted_events(&redact, es));
    let entries = env.status.as_ref().map(|s| s.inventory.clone()).unwrap_or_default();
    let inventory = match &live {
        LiveView::Shown => Inventory::Live(&tree),
        LiveView::NeedsSecret(secret) => Inventory::Withheld {
            entries: &entries,
            secret,
        },
    };
    page(
        StatusCode::OK,
        pages::environment_page(
            &chrome,
            &ns,
            &env,
            promotions.as_deref(),
            inventory,
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
    let redact = ui.data.redactor(&viewer, &ui.data.envs_in(&ns).await).await;
    let p = redact.promotion(p);
    let events = events.map(|es| redacted_events(&redact, es));
    page(
        StatusCode::OK,
        pages::promotion_page(&chrome, &ns, &p, events.as_deref(), &commits, Timestamp::now()),
    )
}

fn redacted_promotions(redact: &Redactor, promotions: Vec<ferry_api::Promotion>) -> Vec<ferry_api::Promotion> {
    promotions.into_iter().map(|p| redact.promotion(p)).collect()
}

fn redacted_events(redact: &Redactor, events: Vec<crate::cli::EventRow>) -> Vec<crate::cli::EventRow> {
    events.into_iter().map(|e| redact.event(e)).collect()
}

/// The viewer, chrome and Promotion of a diff page, once the viewer may list Promotions and Environments in
/// `ns`: the dry run reads the Environment's objects, as much as listing Environments lets one see of them.
async fn diff_for(
    ui: &Ui,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
) -> Result<(Viewer, Chrome, ferry_api::Promotion), Response> {
    let (viewer, chrome, p) = promotion_for(ui, headers, ns, name, true).await?;
    require(
        ui,
        &viewer,
        &chrome,
        Access::list(GROUP, "environments", ns),
        &format!("Environments in namespace {ns}"),
    )
    .await?;
    Ok((viewer, chrome, p))
}

/// The session a CSRF token is bound to: the viewer's bearer token (none in local mode, which has no sign-in).
fn session(headers: &HeaderMap) -> String {
    request_token(headers).unwrap_or_default()
}

/// GET of the diff: only the button that asks for the dry run (or why the viewer may not ask); nothing is
/// fetched, rendered or dry-run, so a link, a prefetch or a crawler costs nothing.
async fn diff_form(State(ui): State<Shared>, headers: HeaderMap, Path((ns, name)): Path<(String, String)>) -> Response {
    let (viewer, chrome, p) = match diff_for(&ui, &headers, &ns, &name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let token = ui.csrf.token(&session(&headers));
    let withheld = withheld_note(&ui, &viewer, &p).await;
    let page_markup = match &withheld {
        Some(note) => pages::diff_page(&chrome, &p, &p.spec.revision, None, Some(Err(note.as_str()))),
        None => pages::diff_page(&chrome, &p, &p.spec.revision, Some(&token), None),
    };
    page(StatusCode::OK, page_markup)
}

/// Why the viewer may not see the dry run of `p`'s Environment (its kubeconfig Secret), if so.
async fn withheld_note(ui: &Ui, viewer: &Viewer, p: &ferry_api::Promotion) -> Option<String> {
    let ns = p.namespace().unwrap_or_default();
    let env = ui
        .data
        .envs_in(&ns)
        .await
        .into_iter()
        .find(|e| e.name_any() == p.spec.environment)?;
    match ui.data.live_view(viewer, &env).await {
        LiveView::Shown => None,
        LiveView::NeedsSecret(secret) => Some(pages::needs_secret(&secret)),
    }
}

#[derive(serde::Deserialize)]
struct DiffForm {
    #[serde(default)]
    csrf: String,
}

/// 403 for a request that may have been made by another site.
fn cross_site() -> Response {
    (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response()
}

/// POST of the diff: the dry run, for a request from our own page (Origin or Referer, and the session's token).
async fn diff_run(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    form: Result<Form<DiffForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !from_this_host(&headers) {
        return cross_site();
    }
    let (viewer, chrome, p) = match diff_for(&ui, &headers, &ns, &name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let given = form.map(|Form(f)| f.csrf).unwrap_or_default();
    let session = session(&headers);
    if !ui.csrf.check(&session, &given) {
        return cross_site();
    }
    if let Some(note) = withheld_note(&ui, &viewer, &p).await {
        return page(
            StatusCode::OK,
            pages::diff_page(&chrome, &p, &p.spec.revision, None, Some(Err(note.as_str()))),
        );
    }
    let result: Result<Vec<DiffItem>, String> = ui.data.diff(&viewer, &p).await.map_err(|e| e.to_string());
    let token = ui.csrf.token(&session);
    page(
        StatusCode::OK,
        pages::diff_page(
            &chrome,
            &p,
            &p.spec.revision,
            Some(&token),
            Some(result.as_deref().map_err(|e| e.as_str())),
        ),
    )
}

/// Server-sent events: a `change` whenever an Environment, Promotion or GitRepository of `ns` changes, for as
/// long as the viewer may still list Environments there ([`LiveStream`] re-checks).
async fn live(State(ui): State<Shared>, headers: HeaderMap, Path(ns): Path<String>) -> Response {
    let viewer = match viewer(&ui, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !may(&ui, &viewer, Access::list(GROUP, "environments", &ns)).await {
        return (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    }
    // The token to review again later; a signed-in viewer always came with one.
    let token = match (&viewer, request_token(&headers)) {
        (Viewer::Local, _) => None,
        (Viewer::User(_), Some(token)) => Some(token),
        (Viewer::User(_), None) => return Redirect::to("/login").into_response(),
    };
    let stream = LiveStream {
        rx: ui.data.changes.subscribe(),
        next_check: tokio::time::Instant::now() + ui.recheck,
        ui: ui.clone(),
        token,
        ns,
    };
    Sse::new(stream.events())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// One open live-update stream: the changes it follows and whose they are.
struct LiveStream {
    ui: Shared,
    rx: tokio::sync::broadcast::Receiver<super::data::Change>,
    /// The viewer's bearer token (None in local mode, where the caller's own kubeconfig reads).
    token: Option<String>,
    ns: String,
    next_check: tokio::time::Instant,
}

impl LiveStream {
    /// The events to send; the stream ends (and with it the response) once the viewer fails a re-check.
    fn events(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut s| async move {
            s.next().await?;
            // No names in the event: the viewer may list Environments here but not necessarily the changed kind.
            Some((Ok(Event::default().event("change").data("refresh")), s))
        })
    }

    /// Waits for the next change to announce; None when the stream must end.
    async fn next(&mut self) -> Option<()> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(self.next_check) => {
                    self.still_allowed().await?;
                }
                change = self.rx.recv() => {
                    let namespace = match change {
                        Ok(change) => change.namespace,
                        // Missed some: one change tells the page to refresh, which is all a lag needs.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => String::new(),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    };
                    if namespace == self.ns {
                        return Some(());
                    }
                    // "Maybe anything" is not this namespace's own news: it goes out only after asking again.
                    if namespace.is_empty() {
                        self.still_allowed().await?;
                        return Some(());
                    }
                    // Other namespaces' changes are not this stream's.
                }
            }
        }
    }

    /// Asks the API server, past the caches, whether the token is still valid and its user may still list
    /// Environments here; schedules the next re-check. None: no longer (or no answer: the stream fails closed,
    /// and the browser reconnects through the checks of a new request).
    async fn still_allowed(&mut self) -> Option<()> {
        self.next_check = tokio::time::Instant::now() + self.ui.recheck;
        let Some(token) = &self.token else {
            return Some(());
        };
        let auth = &self.ui.data.auth;
        let user = match auth.authenticate_now(token).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                tracing::debug!(namespace = %self.ns, "live stream closed: the token is no longer valid");
                return None;
            }
            Err(e) => {
                tracing::debug!(namespace = %self.ns, error = %e, "live stream closed: no answer to the re-check");
                return None;
            }
        };
        let access = Access::list(GROUP, "environments", &self.ns);
        match auth.allowed_now(&Viewer::User(user.clone()), &access).await {
            Ok(true) => Some(()),
            Ok(false) => {
                tracing::debug!(namespace = %self.ns, user = %user.name, "live stream closed: access revoked");
                None
            }
            Err(e) => {
                tracing::debug!(namespace = %self.ns, error = %e, "live stream closed: no answer to the re-check");
                None
            }
        }
    }
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
