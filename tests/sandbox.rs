//! The render sandbox on its own, without a cluster: what code running inside a render can and cannot do.
//!
//! A renderer that has been taken over is played by `tests/sandbox/attack.c`, built static and run in place of
//! kustomize (Ferry executes whatever `--kustomize` names, inside the walls); it tries every escape and reports
//! what the kernel said. The exec attack from a config repo (helm's `--post-renderer` smuggled in through a
//! kustomize generator) runs with the real kustomize and helm and the field checks switched off, so only the
//! sandbox stands in its way. Each test fails without the wall it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry::render::{RenderError, RenderSettings, Sandbox, WorkerSettings, render_path};

fn worker() -> WorkerSettings {
    WorkerSettings {
        program: env!("CARGO_BIN_EXE_ferry").into(),
        limits: Default::default(),
        allow_unconfined: false,
    }
}

/// Builds a C file of `tests/sandbox/` statically (so it needs nothing outside the sandbox), once per name
/// (tests run at once: one builds, the others wait).
fn build_c(name: &str, defines: &[String]) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::env::temp_dir().join(format!("ferry-sandbox-test-{}-{name}", std::process::id()));
    if out.is_file() {
        return out;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/sandbox/{name}.c"));
    let status = std::process::Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .args(defines)
        .arg(&source)
        .status()
        .expect("cc (gcc) is installed by hack/prereqs.sh");
    assert!(status.success(), "building {name}.c");
    out
}

fn attack_settings(attack: &Path) -> RenderSettings {
    RenderSettings {
        kustomize: attack.to_path_buf(),
        sandbox: Sandbox::Worker(worker()),
        ..RenderSettings::default()
    }
}

/// A tree with `apps/kustomization.yaml` (so the "kustomize" runs) and the attack's instructions.
fn attack_tree(conf: &str) -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("apps")).unwrap();
    std::fs::write(tree.path().join("apps/kustomization.yaml"), "resources: []\n").unwrap();
    std::fs::write(tree.path().join("apps/attack.conf"), conf).unwrap();
    tree
}

fn reported(rendered: &ferry::render::Rendered) -> BTreeMap<String, String> {
    let data = &rendered.objects[0].object["data"];
    serde_json::from_value(data.clone()).unwrap()
}

/// The resident memory of this process (the controller, in these tests), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn the_walls_are_up_on_this_machine() {
    let walls = ferry::render::sandbox::probe(&worker()).await.expect("the worker runs");
    println!("render sandbox: {}", walls.summary());
    assert!(walls.holds(), "{walls:?}");
    assert!(
        walls.landlock_fs && walls.landlock_net && walls.seccomp && walls.no_new_privs,
        "{walls:?}"
    );
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(walls.uid, 65534, "a worker started by root renders as nobody");
    }
}

#[tokio::test]
async fn a_taken_over_renderer_cannot_read_write_connect_signal_or_escape() {
    let attack = build_c("attack", &[]);
    let outside = tempfile::tempdir().unwrap();
    // What a renderer in the controller could reach before: a ServiceAccount token, another Environment's
    // export, the git mirrors.
    std::fs::create_dir_all(outside.path().join("serviceaccount")).unwrap();
    std::fs::write(outside.path().join("serviceaccount/token"), "secret").unwrap();
    std::fs::create_dir_all(outside.path().join("trees/other/abc")).unwrap();
    std::fs::write(outside.path().join("trees/other/abc/cm.yaml"), "kind: ConfigMap\n").unwrap();
    // The metrics port, the API server: anything listening on loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let o = outside.path().display();
    let conf = format!(
        "mode=probe\nport={port}\ncontroller={controller}\nread=/proc/1/environ\nread=/etc/passwd\nread={o}/serviceaccount/token\n\
         read={o}/trees/other/abc/cm.yaml\nread=apps/attack.conf\nwrite={o}/pwned\nwrite=/tmp/ferry-pwned-{pid}\n\
         write=apps/pwned\n",
        pid = std::process::id(),
        controller = std::process::id()
    );
    let tree = attack_tree(&conf);
    let rendered = render_path(tree.path(), "apps", &attack_settings(&attack))
        .await
        .expect("the attack renders its report");
    let report = reported(&rendered);
    println!("{report:#?}");
    // Inside the tree: readable (the sandbox is not simply closed).
    assert_eq!(report["readapps_attack_conf"], "ok");
    for key in [
        "read_proc_1_environ",
        "read_etc_passwd",
        "write_tmp_ferry_pwned_",
        "writeapps_pwned",
    ] {
        let value = report
            .iter()
            .find(|(k, _)| k.starts_with(key))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key} reported"));
        assert_eq!(value, "EACCES", "{key}: Landlock");
    }
    for (key, value) in report
        .iter()
        .filter(|(k, _)| k.contains("serviceaccount") || k.contains("trees") || k.contains("pwned"))
    {
        assert_eq!(value, "EACCES", "{key}: Landlock");
    }
    for key in [
        "connect_loopback",
        "socket_inet6",
        "socket_udp_dns",
        "socket_netlink",
        "socket_unix",
        "setsid",
        "setpgid",
        "ptrace_parent",
        "signal_init",
        "unshare_user",
        "io_uring",
        "signal_controller",
        "memfd",
        "sysv_shm",
        "steal_worker_fd",
    ] {
        assert_eq!(report[key], "EPERM", "{key}: seccomp (or Landlock's scopes)");
    }
    assert_eq!(
        report["exec_shell"], "EACCES",
        "only the renderer binaries may be executed"
    );
    assert_eq!(report["fork_limit"], "EAGAIN", "the process limit");
    let forks: u64 = report["forks"].parse().unwrap();
    assert!(forks <= 256, "at most the process limit: {forks}");
    assert!(listener.accept().is_err(), "nothing reached the loopback listener");
    assert!(!outside.path().join("pwned").exists() && !tree.path().join("apps/pwned").exists());
}

#[tokio::test]
async fn a_render_that_never_ends_is_killed_with_everything_it_started() {
    let attack = build_c("attack", &[]);
    let tree = attack_tree("mode=loop\n");
    let settings = RenderSettings {
        timeout: Duration::from_secs(2),
        ..attack_settings(&attack)
    };
    let start = Instant::now();
    let err = render_path(tree.path(), "apps", &settings).await.unwrap_err();
    assert_eq!(err, RenderError::Timeout(2));
    assert!(start.elapsed() < Duration::from_secs(8), "{:?}", start.elapsed());
    // The spinning parent and its child that ignores SIGTERM are both gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path().join("exe")).is_ok_and(|exe| exe == attack))
            .map(|e| e.file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes of the render are left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn memory_beyond_the_limit_fails_the_render_not_the_controller() {
    // A renderer that allocates: stopped at the per-process limit.
    let attack = build_c("attack", &[]);
    let tree = attack_tree("mode=memory\n");
    let mut settings = attack_settings(&attack);
    if let Sandbox::Worker(w) = &mut settings.sandbox {
        w.limits.memory_bytes = 256 << 20;
    }
    let rendered = render_path(tree.path(), "apps", &settings).await.unwrap();
    let mib: u64 = reported(&rendered)["mebibytes"].parse().unwrap();
    assert!(mib <= 256, "allocated {mib} MiB under a 256 MiB limit");

    // The alias bomb from a config repo: 1 MiB anchored once, aliased 1,500 times (1.5 GB expanded).
    let bomb = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bomb.path().join("apps")).unwrap();
    let mut yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata:\n  a: &a \"{}\"\n",
        "x".repeat(1 << 20)
    );
    for i in 0..1500 {
        yaml.push_str(&format!("  k{i}: *a\n"));
    }
    std::fs::write(bomb.path().join("apps/bomb.yaml"), yaml).unwrap();
    let before = rss_kib();
    let err = render_path(
        bomb.path(),
        "apps",
        &RenderSettings {
            sandbox: Sandbox::Worker(worker()),
            ..RenderSettings::default()
        },
    )
    .await
    .unwrap_err();
    let after = rss_kib();
    println!("alias bomb: {err}; controller RSS {before} KiB → {after} KiB");
    assert!(
        matches!(err, RenderError::LimitExceeded(ref what) if what.starts_with("memory")),
        "{err:?}"
    );
    assert_eq!(err.reason(), ferry::api::Reason::RenderLimitExceeded);
    assert!(
        after < before + 50 * 1024,
        "the controller's memory moved: {before} → {after} KiB"
    );
}

/// The kustomize and helm the tests pin (hack/controlplane-build.sh).
fn bin_dir() -> PathBuf {
    ferry_testenv::bin_dir_from_env_or_build(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn helm_post_renderer_smuggled_through_kustomize_cannot_run_a_shell() {
    let marker = std::env::temp_dir().join(format!("ferry-post-renderer-ran-{}", std::process::id()));
    let tree = tempfile::tempdir().unwrap();
    let write = |rel: &str, content: &str| {
        let p = tree.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    write("apps/charts/c/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n");
    write("apps/charts/c/values.yaml", "{}\n");
    // The chart renders shell commands; the post-renderer is /bin/sh, which would run them.
    write(
        "apps/charts/c/templates/cm.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  run: |\n    touch {m}\n    /usr/bin/id > {m}\n",
            m = marker.display()
        ),
    );
    write(
        "apps/kustomization.yaml",
        "helmCharts:\n- name: c\n  releaseName: ok\ngenerators:\n- |\n  apiVersion: builtin\n  kind: HelmChartInflationGenerator\n  metadata: {name: x}\n  name: c\n  releaseName: --post-renderer=/bin/sh\n",
    );
    let bin = bin_dir();
    let settings = RenderSettings {
        kustomize: bin.join("kustomize"),
        helm: bin.join("helm"),
        sandbox: Sandbox::Worker(worker()),
        ..RenderSettings::default()
    };
    // With Ferry's field checks: refused before kustomize runs.
    let checked = render_path(tree.path(), "apps", &settings).await.unwrap_err();
    println!("with the field checks: {checked}");
    // Without them (a case they do not know): the sandbox alone.
    let err = render_unchecked(tree.path(), &settings).await.unwrap_err();
    println!("without the field checks: {err}");
    assert!(
        err.to_string().contains("permission denied"),
        "helm could not execute /bin/sh: {err}"
    );
    assert!(!marker.exists(), "the post-renderer ran");
    // The same render in the controller's process, as Ferry did before the sandbox: the shell runs. (What
    // makes this test worth having: the attack is real.)
    let in_process = RenderSettings {
        sandbox: Sandbox::InProcess,
        ..settings.clone()
    };
    let _ = render_unchecked(tree.path(), &in_process).await;
    assert!(marker.exists(), "without the sandbox the post-renderer runs");
    let _ = std::fs::remove_file(&marker);
}

/// Renders with the field checks switched off (debug builds only: the worker inherits the switch).
async fn render_unchecked(root: &Path, settings: &RenderSettings) -> Result<ferry::render::Rendered, RenderError> {
    // SAFETY: this test binary's other tests never read this variable; it is set once and never removed.
    unsafe { std::env::set_var("FERRY_TEST_SKIP_RENDER_CHECKS", "1") };
    render_path(root, "apps", settings).await
}

#[tokio::test]
async fn without_landlock_plain_yaml_renders_and_renderers_are_refused_unless_the_operator_allows_them() {
    let ferry = format!("-DFERRY=\"{}\"", env!("CARGO_BIN_EXE_ferry"));
    let no_landlock = WorkerSettings {
        program: build_c("nolandlock", &[ferry]),
        ..worker()
    };
    let walls = ferry::render::sandbox::probe(&no_landlock).await.unwrap();
    assert!(!walls.holds() && walls.landlock_abi == 0, "{walls:?}");
    assert!(walls.summary().contains("Landlock"), "{}", walls.summary());

    let attack = build_c("attack", &[]);
    let tree = attack_tree("mode=probe\nread=/etc/passwd\n");
    std::fs::write(
        tree.path().join("apps/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\n",
    )
    .unwrap();
    let settings = |allow_unconfined| RenderSettings {
        sandbox: Sandbox::Worker(WorkerSettings {
            allow_unconfined,
            ..no_landlock.clone()
        }),
        ..attack_settings(&attack)
    };
    // Plain YAML: rendered in the worker (its limits and process group still hold).
    std::fs::create_dir_all(tree.path().join("plain")).unwrap();
    std::fs::copy(tree.path().join("apps/cm.yaml"), tree.path().join("plain/cm.yaml")).unwrap();
    let plain = render_path(tree.path(), "plain", &settings(false)).await.unwrap();
    assert_eq!(plain.objects[0].name(), "plain");
    // A kustomization: refused, saying why and what the operator can do.
    let err = render_path(tree.path(), "apps", &settings(false)).await.unwrap_err();
    assert!(matches!(err, RenderError::SandboxUnavailable(_)), "{err:?}");
    assert_eq!(err.reason(), ferry::api::Reason::SandboxUnavailable);
    assert!(err.to_string().contains("--insecure-render-without-sandbox"), "{err}");
    // --insecure-render-without-sandbox: it runs, and can read what Landlock would have kept from it.
    let rendered = render_path(tree.path(), "apps", &settings(true)).await.unwrap();
    assert_eq!(reported(&rendered)["read_etc_passwd"], "ok");
}
