//! The web view as a person uses it: Debian's headless Chromium, driven over the DevTools protocol, against
//! `ferry run --ui-addr` running as installed (manifests/rbac.yaml's identity) on the local control plane.
//! Viewers sign in with ServiceAccount tokens: one that may list the namespace's Ferry kinds (but not its
//! Secrets), one that may list nothing there. Over plain HTTP: the diff's POST and its CSRF checks, an
//! Environment on another cluster seen with and without `get` on its kubeconfig Secret, and live streams that
//! close once their viewer's RoleBinding or token is gone.
//!
//! Screenshots of the pages land in the target dir, and with FERRY_UPDATE_SCREENSHOTS=1 in docs/src/screenshots/
//! (the docs' web view page shows them).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry::api::{Environment, Promotion, PromotionPhase};
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use serde::Deserialize as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A value of a Secret the repository applies: no page may contain it, in any encoding.
const SECRET_VALUE: &str = "hunter2-never-shown";

/// Chromium, headless, with one page attached over the DevTools protocol.
struct Browser {
    child: Child,
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = Command::new(std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "chromium".into()));
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = ferry_testenv::spawn_guarded(cmd).expect("starting chromium (hack/prereqs.sh installs it)");
        // Chromium writes its port into the profile once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let text = eventually("chromium listens for DevTools", || async {
            std::fs::read_to_string(&port_file)
                .ok()
                .filter(|t| t.lines().count() >= 2)
        })
        .await;
        let mut lines = text.lines();
        let port = lines.next().expect("port").trim().to_string();
        let path = lines.next().expect("path").trim().to_string();
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
            .await
            .expect("DevTools websocket");
        let mut browser = Browser {
            child,
            ws,
            next: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"})).await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().expect("session").to_string();
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser.viewport(1280, 860, false).await;
        browser
    }

    /// One DevTools command (on the page's session once attached); events in between are skipped.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("DevTools send");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let next = tokio::time::timeout_at(deadline.into(), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no DevTools answer to {method}"));
            let Some(Ok(Message::Text(text))) = next else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// A JavaScript expression's value (promises awaited).
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Opens `url` and waits until the new document has loaded (the old one carried a marker).
    async fn goto(&mut self, url: &str) {
        self.eval("window.__leaving = true").await;
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait(&format!("{url} to load"), DEADLINE, |b| {
            Box::pin(async move {
                let loaded = b
                    .eval("window.__leaving !== true && document.readyState === 'complete'")
                    .await;
                (loaded == true).then_some(())
            })
        })
        .await;
    }

    /// Waits (up to `deadline`) until `probe` answers.
    async fn wait<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut probe: impl for<'a> FnMut(
            &'a mut Browser,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<T>> + 'a>>,
    ) -> T {
        let end = Instant::now() + deadline;
        loop {
            if let Some(v) = probe(self).await {
                return v;
            }
            assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page's text contains every one of `needles`; returns the page's HTML.
    async fn wait_text(&mut self, needles: &[&str]) -> String {
        let needles: Vec<String> = needles.iter().map(|s| s.to_string()).collect();
        let what = format!("the page to show {needles:?}");
        self.wait(&what, DEADLINE, move |b| {
            let needles = needles.clone();
            Box::pin(async move {
                let text = b.eval("document.body ? document.body.innerText : ''").await;
                let text = text.as_str().unwrap_or_default();
                needles.iter().all(|n| text.contains(n.as_str())).then_some(())
            })
        })
        .await;
        self.html().await
    }

    async fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A PNG of the whole page into docs/src/screenshots/`name`.
    async fn screenshot(&mut self, name: &str) {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let width = metrics["cssLayoutViewport"]["clientWidth"].as_f64().unwrap_or(1280.0);
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(900.0)
            .min(4000.0);
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
            )
            .await;
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        // Into the target dir every run; into the docs' docs/src/screenshots/ with FERRY_UPDATE_SCREENSHOTS=1 (so
        // a test run does not change tracked files).
        let mut dirs = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")];
        if std::env::var_os("FERRY_UPDATE_SCREENSHOTS").is_some() {
            dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/src/screenshots"));
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).expect("screenshots dir");
            std::fs::write(dir.join(name), &png).expect("writing screenshot");
        }
    }

    /// Signs in through the form, as a person pastes a token.
    async fn sign_in(&mut self, base: &str, token: &str) {
        self.goto(&format!("{base}/login")).await;
        self.eval(&format!(
            "document.getElementById('token').value = {}; document.querySelector('form[action=\"/login\"]').submit(); true",
            json!(token)
        ))
        .await;
        self.wait_text(&["Pipelines"]).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `ferry run` as installed (plus `extra` flags), for this test's namespace, serving the web view; returns it and
/// the UI's base URL.
async fn ferry_run(t: &TestEnv, kubeconfig: &std::path::Path, extra: &[&str]) -> (FerryRun, String) {
    let ui = ferry_testenv::free_port().expect("port");
    let storage = std::env::temp_dir().join(format!("ferry-{}-ui", t.namespace));
    let mut args = deployment_args();
    args.extend(["--namespace", &t.namespace, "--leader-elect=false"].map(str::to_string));
    args.extend(["--ui-addr".to_string(), format!("127.0.0.1:{ui}")]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let run = start_ferry_run(t, kubeconfig, &storage, &args, |_| {});
    let base = format!("http://127.0.0.1:{ui}");
    eventually("the web view answers", || async {
        http_get(&base, "/login", &[]).await.filter(|(code, _)| *code == 200)
    })
    .await;
    (run, base)
}

/// A GET over a raw socket: status and body (None while nothing listens).
async fn http_get(base: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.strip_prefix("http://").expect("http URL");
    let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| authority.to_string());
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// A ServiceAccount of the test's namespace and a token for it.
async fn account_token(t: &TestEnv, name: &str) -> String {
    t.apply_json(
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": t.namespace}}),
    )
    .await;
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).expect("token request");
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(t.client.clone(), &t.namespace)
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .expect("token");
    issued.status.and_then(|s| s.token).expect("token issued")
}

fn app(env: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{env}\ndata:\n  replicas: \"3\"\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-{env}\nstringData:\n  password: {SECRET_VALUE}\n"
    )
}

/// staging follows the repository; production is promoted from it with approval. Returns the commit.
async fn pipeline(t: &TestEnv) -> String {
    let ns = &t.namespace;
    for o in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "deployer", "namespace": ns},
               "rules": [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "deployer", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}]}),
        // What a viewer gets: the example's Role (Ferry's kinds, Events, ConfigMaps; not Secrets).
        example_viewer_role(ns),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "viewer", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferry-viewer"},
               "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}]}),
    ] {
        t.apply_json(&o).await;
    }
    t.repo.write("apps/staging/app.yaml", &app("staging"));
    t.repo.write("apps/production/app.yaml", &app("production"));
    let commit = t.repo.commit_and_push("Scale the web tier to 3 replicas");
    t.create_gitrepo(
        "config",
        json!({"url": t.repo.url, "ref": {"branch": "main"}, "interval": "1m"}),
    )
    .await;
    t.config_env_with(
        "staging",
        "./apps/staging",
        "1m",
        json!({"serviceAccountName": "deployer"}),
    )
    .await;
    t.config_env_with(
        "production",
        "./apps/production",
        "1m",
        json!({"serviceAccountName": "deployer", "promotion": {"from": "staging", "requireApproval": true}}),
    )
    .await;
    commit
}

/// The Role of examples/ui/viewer-role.yaml, moved into namespace `ns`.
fn example_viewer_role(ns: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ui/viewer-role.yaml");
    let text = std::fs::read_to_string(path).expect("example");
    let mut role: Value = serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|d| Value::deserialize(d).ok())
        .find(|d| d["kind"] == "Role")
        .expect("a Role in the example");
    role["metadata"]["namespace"] = json!(ns);
    role
}

fn no_secret(page: &str, html: &str) {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE);
    assert!(
        !html.contains(SECRET_VALUE) && !html.contains(&encoded),
        "{page} shows a Secret value"
    );
}

#[tokio::test]
async fn a_viewer_watches_the_pipeline_follow_an_approval_live_and_sees_only_what_rbac_allows() {
    let t = TestEnv::without_controller("ui").await;
    let ns = t.namespace.clone();
    let kubeconfig = t.installed_kubeconfig().await;
    let commit = pipeline(&t).await;
    let revision = format!("main@sha1:{commit}");
    let short = &commit[..12];
    let (mut ferry, base) = ferry_run(&t, &kubeconfig, &[]).await;
    let promotion = ferry::promotion::promotion_name("production", &revision);
    wait_for(&t.api::<Promotion>(), &promotion, |p: &Promotion| {
        p.phase() == PromotionPhase::WaitingApproval
    })
    .await;
    let viewer = account_token(&t, "viewer").await;
    let outsider = account_token(&t, "outsider").await;

    let mut b = Browser::launch().await;
    // Signed out, every page sends to the sign-in form.
    b.goto(&format!("{base}/ns/{ns}")).await;
    b.wait_text(&["Sign in", "Token"]).await;
    b.sign_in(&base, &viewer).await;
    b.wait_text(&[ns.as_str()]).await;

    // The pipeline: staging runs the commit (with its message), production waits for approval.
    b.goto(&format!("{base}/ns/{ns}")).await;
    let html = b
        .wait_text(&[
            "staging",
            "production",
            short,
            "Scale the web tier to 3 replicas",
            "WaitingApproval",
        ])
        .await;
    no_secret("the pipeline", &html);
    let cards = b
        .eval("[...document.querySelectorAll('.pipeline [data-env]')].map(c => c.dataset.env)")
        .await;
    assert_eq!(cards, json!(["staging", "production"]), "promotion order");
    assert_eq!(
        b.eval("document.querySelector('[data-env=staging] .applied').dataset.revision")
            .await,
        json!(revision)
    );
    assert_eq!(
        b.eval("document.querySelector('[data-env=production] .applied').dataset.revision ?? null")
            .await,
        Value::Null,
        "production has applied nothing yet"
    );
    assert_eq!(
        b.eval("document.querySelector('[data-env=production] .promotion').dataset.phase")
            .await,
        json!("WaitingApproval")
    );
    b.wait("the live connection", DEADLINE, |b| {
        Box::pin(async move { (b.eval("document.getElementById('live').className").await == "live on").then_some(()) })
    })
    .await;
    b.screenshot("pipeline.png").await;

    // What approving would change: opening the diff only offers the dry run; the button runs it. Secrets are
    // masked (this viewer may not read them at all).
    b.goto(&format!("{base}/ns/{ns}/promotions/{promotion}/diff")).await;
    let html = b.wait_text(&["Dry-run the diff"]).await;
    assert!(!html.contains("app-production"), "a GET computes nothing: {html}");
    b.eval("document.querySelector('form.dry-run').submit(); true").await;
    let html = b.wait_text(&["ConfigMap", "app-production", "replicas"]).await;
    no_secret("the diff", &html);
    assert!(
        html.contains("hidden: you may not read this kind here"),
        "the Secret's diff is hidden"
    );
    diff_needs_a_post_from_this_site(&base, &ns, &promotion, &viewer).await;

    // Approving updates the open page without a reload.
    b.goto(&format!("{base}/ns/{ns}")).await;
    b.wait_text(&["WaitingApproval"]).await;
    b.wait("the live connection", DEADLINE, |b| {
        Box::pin(async move { (b.eval("document.getElementById('live').className").await == "live on").then_some(()) })
    })
    .await;
    b.eval("window.__sameDocument = true").await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["approve", "-n", &ns, &promotion, "-m", "ship it"])
        .env("KUBECONFIG", &t.kubeconfig)
        .output()
        .await
        .expect("ferry approve");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let approved = Instant::now();
    // The promise: within 2 s of the approval the open page shows it.
    b.wait("the approval on the open page", Duration::from_secs(2), |b| {
        Box::pin(async move {
            let shown = b
                .eval("window.__sameDocument === true && !!document.querySelector('[data-env=production] [data-decision=Approved]')")
                .await;
            (shown == true).then_some(())
        })
    })
    .await;
    println!(
        "approval shown on the open page after {} ms",
        approved.elapsed().as_millis()
    );
    // And it goes on following the controller until production runs the revision.
    let want = json!(revision);
    b.wait("production to apply the revision on the open page", DEADLINE, move |b| {
        let want = want.clone();
        Box::pin(async move {
            let v = b
                .eval("[window.__sameDocument === true, document.querySelector('[data-env=production] .applied').dataset.revision ?? null]")
                .await;
            (v[0] == true && v[1] == want).then_some(())
        })
    })
    .await;
    wait_for(&t.api::<Promotion>(), &promotion, |p: &Promotion| {
        p.phase() == PromotionPhase::Succeeded
    })
    .await;
    wait_for(&t.api::<Environment>(), "production", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(revision.as_str())
            && env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;

    // The Environment: its inventory with health; the Secret's health is hidden from this viewer.
    b.goto(&format!("{base}/ns/{ns}/environments/production")).await;
    let html = b
        .wait_text(&[
            "Inventory",
            "app-production",
            "Current",
            "History",
            "Verified",
            "Events",
        ])
        .await;
    no_secret("the Environment", &html);
    assert!(html.contains("hidden: no access"), "the viewer may not read Secrets");
    b.screenshot("environment.png").await;

    // The Promotion: its timeline and who approved.
    b.goto(&format!("{base}/ns/{ns}/promotions/{promotion}")).await;
    let html = b
        .wait_text(&[
            "Timeline",
            "WaitingApproval",
            "Applying",
            "Succeeded",
            "Approved",
            "ship it",
        ])
        .await;
    no_secret("the Promotion", &html);
    assert!(
        html.contains("kubernetes-admin") || html.contains("admin"),
        "who approved"
    );
    b.screenshot("promotion.png").await;

    // Phone width: one column.
    b.viewport(390, 844, true).await;
    b.goto(&format!("{base}/ns/{ns}")).await;
    b.wait_text(&["staging", "production", "Succeeded"]).await;
    b.screenshot("pipeline-phone.png").await;
    b.viewport(1280, 860, false).await;

    // A viewer without rights in the namespace sees nothing of it, and is refused its URLs.
    b.goto(&format!("{base}/")).await;
    b.eval("document.querySelector('.who form').submit(); true").await;
    b.wait_text(&["Sign in"]).await;
    b.sign_in(&base, &outsider).await;
    // (The header names the user, whose ServiceAccount name contains the namespace; the page's content not.)
    let main = b.eval("document.querySelector('main').innerText").await;
    assert!(
        main.as_str().is_some_and(|m| !m.contains(&ns)),
        "the outsider's index lists the namespace: {main}"
    );
    assert!(
        main.as_str()
            .is_some_and(|m| m.contains("No Environments you may list")),
        "{main}"
    );
    let urls = json!([
        format!("/ns/{ns}"),
        format!("/ns/{ns}/environments/staging"),
        format!("/ns/{ns}/promotions/{promotion}"),
        format!("/ns/{ns}/promotions/{promotion}/diff"),
        format!("/live/{ns}"),
    ]);
    let statuses = b
        .eval(&format!(
            "Promise.all({urls}.map(u => fetch(u, {{credentials: 'same-origin'}}).then(r => r.text().then(t => [r.status, t.includes('staging')]))))"
        ))
        .await;
    assert_eq!(
        statuses,
        json!([[403, false], [403, false], [403, false], [403, false], [403, false]])
    );

    // Without a browser: a token in the header works the same; no token, a bad one, or a foreign form post not.
    let bearer = format!("Bearer {outsider}");
    let (code, _) = http_get(&base, &format!("/ns/{ns}"), &[("Authorization", &bearer)])
        .await
        .expect("GET");
    assert_eq!(code, 403);
    let bearer = format!("Bearer {viewer}");
    let (code, body) = http_get(&base, &format!("/ns/{ns}"), &[("Authorization", &bearer)])
        .await
        .expect("GET");
    assert_eq!(code, 200);
    assert!(body.contains("data-env=\"production\""));
    let (code, body) = http_get(&base, &format!("/ns/{ns}"), &[]).await.expect("GET");
    assert!(code == 303 && body.contains("location: /login"), "{body}");
    let (code, _) = http_get(&base, &format!("/ns/{ns}"), &[("Authorization", "Bearer not-a-token")])
        .await
        .expect("GET");
    assert_eq!(code, 401);
    let (code, _) = http_post(
        &format!("{base}/login"),
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("token={viewer}").as_bytes(),
    )
    .await;
    assert_eq!(code, 403, "a sign-in posted from another site is refused");
    drop(b);
    ferry.kill();
}

/// The diff over plain HTTP: a GET shows the button (with the session's token) and computes nothing; a POST
/// runs the dry run only with that token and from this site.
async fn diff_needs_a_post_from_this_site(base: &str, ns: &str, promotion: &str, token: &str) {
    let path = format!("/ns/{ns}/promotions/{promotion}/diff");
    let bearer = format!("Bearer {token}");
    let (code, page) = http_get(base, &path, &[("Authorization", &bearer)]).await.expect("GET");
    assert_eq!(code, 200, "{page}");
    assert!(!page.contains("app-production"), "a GET computes nothing: {page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's token")
        .to_string();
    let url = format!("{base}{path}");
    let own = base.to_string();
    let form = "application/x-www-form-urlencoded";
    let post = |origin: Option<&'static str>, body: String| {
        let (url, bearer, own) = (url.clone(), bearer.clone(), own.clone());
        async move {
            let origin = match origin {
                Some("own") => Some(own),
                Some(other) => Some(other.to_string()),
                None => None,
            };
            let mut headers = vec![("Authorization", bearer.as_str()), ("Content-Type", form)];
            if let Some(o) = &origin {
                headers.push(("Origin", o.as_str()));
            }
            http_post(&url, &headers, body.as_bytes()).await
        }
    };
    let (code, body) = post(Some("own"), String::new()).await;
    assert_eq!(code, 403, "no token: {body}");
    let (code, body) = post(Some("own"), "csrf=00ff".into()).await;
    assert_eq!(code, 403, "a wrong token: {body}");
    let (code, body) = post(Some("http://evil.example"), format!("csrf={csrf}")).await;
    assert_eq!(code, 403, "another site: {body}");
    let (code, body) = post(None, format!("csrf={csrf}")).await;
    assert_eq!(code, 403, "no Origin or Referer: {body}");
    let (code, body) = post(Some("own"), format!("csrf={csrf}")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("app-production") && body.contains("replicas"), "{body}");
    no_secret("the diff over HTTP", &body);
}

/// The port of a `https://127.0.0.1:PORT` server URL.
fn port_of(server: &str) -> String {
    server
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string()
}

#[tokio::test]
async fn another_cluster_s_live_state_and_address_show_only_to_viewers_who_may_get_its_kubeconfig_secret() {
    let t = TestEnv::without_controller("ui-remote").await;
    let ns = t.namespace.clone();
    let kubeconfig = t.installed_kubeconfig().await;
    // Environment `remote` applies to the second cluster; `cutoff` to a server nobody listens on, so its status
    // names that address ("cannot reach the target cluster https://127.0.0.1:PORT ...").
    let remote = second_cluster().await;
    let remote_client = remote.client().await.expect("remote client");
    let remote_ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(remote_client)
        .create(&PostParams::default(), &remote_ns)
        .await
        .expect("namespace in the second cluster");
    let remote_kubeconfig = remote.kubeconfig_self_contained().expect("kubeconfig");
    let remote_address = format!("127.0.0.1:{}", port_of(&remote.server));
    let cut_port = ferry_testenv::free_port().expect("port").to_string();
    let cut_kubeconfig = remote_kubeconfig.replace(&remote_address, &format!("127.0.0.1:{cut_port}"));
    assert_ne!(
        cut_kubeconfig, remote_kubeconfig,
        "the server line: {remote_kubeconfig}"
    );
    t.create_secret("remote", &[("value", &remote_kubeconfig)]).await;
    t.create_secret("cutoff", &[("value", &cut_kubeconfig)]).await;
    for o in [
        example_viewer_role(&ns),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "kubeconfigs", "namespace": ns},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                          "resourceNames": ["remote", "cutoff"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "viewers", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferry-viewer"},
               "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns},
                            {"kind": "ServiceAccount", "name": "keeper", "namespace": ns}]}),
        // The Environments' own account (the namespace's `default`) reads their kubeconfigs, as Ferry now does.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "keeper", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubeconfigs"},
               "subjects": [{"kind": "ServiceAccount", "name": "keeper", "namespace": ns},
                            {"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
    ] {
        t.apply_json(&o).await;
    }
    t.repo.write(
        "apps/app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  replicas: \"3\"\n",
    );
    t.repo.commit_and_push("one ConfigMap");
    t.config_source("1m").await;
    for (env, secret) in [("remote", "remote"), ("cutoff", "cutoff")] {
        t.config_env_with(
            env,
            "./apps",
            "1m",
            json!({"kubeConfig": {"secretRef": {"name": secret}}}),
        )
        .await;
    }
    let (mut ferry, base) = ferry_run(&t, &kubeconfig, &[]).await;
    wait_for(&t.api::<Environment>(), "remote", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let cut_address = format!("127.0.0.1:{cut_port}");
    wait_for(&t.api::<Environment>(), "cutoff", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, m)| s == "False" && m.contains(&cut_address))
    })
    .await;
    let viewer = account_token(&t, "viewer").await;
    let keeper = account_token(&t, "keeper").await;
    let get = |token: &str, path: String| {
        let (base, bearer) = (base.clone(), format!("Bearer {token}"));
        async move {
            let (code, body) = http_get(&base, &path, &[("Authorization", &bearer)])
                .await
                .expect("GET");
            assert_eq!(code, 200, "{path}: {body}");
            body
        }
    };
    let healthy = " Current</span>";
    let note = format!("The live view of the other cluster needs get on Secret {ns}/remote.");

    // Without `get` on the Secret: the Environment's own status and inventory names, no live state, no address.
    let page = get(&viewer, format!("/ns/{ns}/environments/remote")).await;
    assert!(page.contains(&note), "{page}");
    assert!(page.contains("live state not shown") && page.contains("app"), "{page}");
    assert!(!page.contains(healthy), "the other cluster's health: {page}");
    assert!(!page.contains(&remote_address), "the other cluster's address: {page}");
    let mut shown = Vec::new();
    for path in [
        format!("/ns/{ns}"),
        format!("/ns/{ns}/environments/cutoff"),
        format!("/ns/{ns}/environments/remote"),
    ] {
        let page = get(&viewer, path.clone()).await;
        assert!(
            !page.contains(&cut_address) && !page.contains(&remote_address),
            "{path} shows a kubeconfig's server: {page}"
        );
        shown.push(page);
    }
    assert!(
        shown[1].contains("ClusterUnreachable") && shown[1].contains("server hidden"),
        "the status is shown, without the address: {}",
        shown[1]
    );

    // With it: the live state from the other cluster, and the messages as written.
    let page = get(&keeper, format!("/ns/{ns}/environments/remote")).await;
    assert!(page.contains(healthy), "{page}");
    assert!(!page.contains("needs get on Secret"), "{page}");
    let page = get(&keeper, format!("/ns/{ns}/environments/cutoff")).await;
    assert!(page.contains(&cut_address), "{page}");
    ferry.kill();
}

/// Reads an open response until the server closes it; the time that took (None: still open at `within`).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Opens the live-update stream of `ns` with `token`; returns the connection once the 200 head came.
async fn open_live(base: &str, ns: &str, token: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.strip_prefix("http://").expect("http URL");
    let mut stream = tokio::net::TcpStream::connect(authority).await.expect("connect");
    let req = format!(
        "GET /live/{ns} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .expect("the stream's head")
            .expect("read");
        assert!(n == 1, "closed before the head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

#[tokio::test]
async fn a_live_stream_closes_soon_after_its_viewer_loses_access_or_its_token() {
    let t = TestEnv::without_controller("ui-revoke").await;
    let ns = t.namespace.clone();
    let kubeconfig = t.installed_kubeconfig().await;
    for o in [
        example_viewer_role(&ns),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "viewer", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferry-viewer"},
               "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "leaver", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferry-viewer"},
               "subjects": [{"kind": "ServiceAccount", "name": "leaver", "namespace": ns}]}),
    ] {
        t.apply_json(&o).await;
    }
    let viewer = account_token(&t, "viewer").await;
    let leaver = account_token(&t, "leaver").await;
    let recheck = Duration::from_secs(1);
    let (mut ferry, base) = ferry_run(&t, &kubeconfig, &["--ui-access-recheck", "1s"]).await;
    // Slack over the period for the reviews' round trips on a loaded machine; far below the 10 s decision cache.
    let within = recheck + Duration::from_secs(4);

    // While access holds, re-checks pass and the stream stays open (the RoleBinding then goes between two).
    let mut stream = open_live(&base, &ns, &viewer).await;
    assert_eq!(
        closed_within(&mut stream, recheck * 5 / 2).await,
        None,
        "closed while the viewer may still list Environments"
    );
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(t.client.clone(), &ns)
        .delete("viewer", &Default::default())
        .await
        .expect("deleting the RoleBinding");
    let closed = closed_within(&mut stream, within).await;
    println!("stream closed {closed:?} after the RoleBinding went");
    assert!(closed.is_some(), "still open {within:?} after the RoleBinding went");
    let (code, _) = http_get(
        &base,
        &format!("/live/{ns}"),
        &[("Authorization", &format!("Bearer {viewer}"))],
    )
    .await
    .expect("GET");
    assert_eq!(code, 403, "a new stream is refused");

    // A token that stops being valid (its ServiceAccount deleted) ends its stream too, once the API server's
    // TokenReview says so: it trusts a token it accepted for 10 s (its own authentication cache).
    let mut stream = open_live(&base, &ns, &leaver).await;
    t.api::<ServiceAccount>()
        .delete("leaver", &Default::default())
        .await
        .expect("deleting the ServiceAccount");
    let within = within + Duration::from_secs(10);
    let closed = closed_within(&mut stream, within).await;
    println!("stream closed {closed:?} after the ServiceAccount went");
    assert!(
        closed.is_some(),
        "still open {within:?} after the token's ServiceAccount went"
    );
    ferry.kill();
}

#[tokio::test]
async fn ferry_ui_serves_the_callers_view_on_loopback_only() {
    let t = TestEnv::new("ui-local").await;
    let commit = pipeline(&t).await;
    wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref())
            .is_some_and(|r| r.ends_with(&commit))
    })
    .await;
    // Anything but loopback is refused before it listens: the local view has no sign-in.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["ui", "--addr", "0.0.0.0:0"])
        .env("KUBECONFIG", &t.kubeconfig)
        .output()
        .expect("ferry ui");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let port = ferry_testenv::free_port().expect("port");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(["ui", "--addr", &format!("127.0.0.1:{port}"), "-n", &t.namespace])
        .env("KUBECONFIG", &t.kubeconfig)
        .stdout(Stdio::null());
    let mut ui = ferry_testenv::spawn_guarded(cmd).expect("ferry ui");
    let base = format!("http://127.0.0.1:{port}");
    let path = format!("/ns/{}", t.namespace);
    let (_, body) = eventually("ferry ui shows the pipeline", || async {
        http_get(&base, &path, &[])
            .await
            .filter(|(code, body)| *code == 200 && body.contains(&commit[..12]))
    })
    .await;
    assert!(body.contains("data-env=\"staging\"") && body.contains("data-env=\"production\""));
    no_secret("the local pipeline", &body);
    // A page that resolved some other name to 127.0.0.1 (DNS rebinding) is refused.
    let (code, _) = http_get(&base, &path, &[("Host", &format!("evil.example:{port}"))])
        .await
        .expect("GET");
    assert_eq!(code, 421);
    stop(&mut ui);
}
