//! Loading Butler's config files: the real Butler template, `check-config`, and
//! error messages that name the key path, the value and what was expected.

use crate::support;

use support::server::{KV_CONFIG, Server, client, json_of, run_cli};

const TEMPLATE: &str = include_str!("fixtures/butler-production-template.yaml");

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Butler's template with the placeholders for the keys we use filled in, the
/// REST API and key-value store switched on, on `{port}`.
fn filled_template() -> String {
    TEMPLATE
        .replace(
            "        enable: false # Should Butler's REST API be started?",
            "        enable: true # Should Butler's REST API be started?",
        )
        .replace(
            "        serverHost: 10.11.12.13 # FQDN or IP (or localhost) of server where Butler is running>",
            "        serverHost: 127.0.0.1 #",
        )
        .replace("        serverPort: 8080 #", "        serverPort: {port} #")
        .replace(
            "        enable: false # Should Butler's key-value store be enabled?",
            "        enable: true #",
        )
        .replace("        butlerping: false", "        butlerping: true")
        .replace("        keyValueStore: false", "        keyValueStore: true")
        .replace("<path/to/cert/client.pem>", "{dir}/client.pem")
        .replace("<path/to/cert/client_key.pem>", "{dir}/client_key.pem")
        .replace("<path/to/cert/root.pem>", "{dir}/root.pem")
}

#[test]
fn butlers_production_template_loads_and_serves() {
    let server = Server::start(&filled_template());
    let (status, body) = json_of(client().get(server.url("/v4/butlerping")).send().unwrap());
    assert_eq!(status, 200, "{body}");
    let response = client()
        .post(server.url("/v4/keyvalues/template"))
        .header("Content-Type", "application/json")
        .body(r#"{"key":"k","value":"v"}"#)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert!(
        !server.log().contains("ERROR"),
        "loading the template logged errors:\n{}",
        server.log()
    );
}

#[test]
fn ignored_keys_are_listed_at_debug_level_not_rejected() {
    let config = filled_template().replace("    logLevel: info #", "    logLevel: debug #");
    let server = Server::start(&config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !server.log().contains("Butler.mqttConfig.brokerHost") {
        assert!(
            std::time::Instant::now() < deadline,
            "ignored keys were not listed:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn check_config_reports_what_will_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = KV_CONFIG
        .replace("{port}", "8099")
        .replace("{max_keys}", "250");
    let path = write(&dir, "ok.yaml", &text);
    let (code, out, err) = run_cli(&["check-config", &path]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("listener: http://127.0.0.1:8099"), "{out}");
    assert!(
        out.contains("enabled endpoints: apiListEnabledEndpoints, butlerping, keyValueStore"),
        "{out}"
    );
    assert!(out.contains("at most 250 keys per namespace"), "{out}");

    let template = write(
        &dir,
        "template.yaml",
        &filled_template()
            .replace("{port}", "8098")
            .replace("{dir}", "/etc/butler-edge"),
    );
    let (code, out, err) = run_cli(&["check-config", &template]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("ignored keys"), "{out}");
}

#[test]
fn config_errors_name_the_key_the_value_and_the_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "Butler:\n  restServerConfig:\n    serverPort: 80800\n",
            "Butler.restServerConfig.serverPort: expected a port 1-65535, found \"80800\"",
        ),
        (
            "Butler:\n  logLevel: chatty\n",
            "Butler.logLevel: expected one of silly, debug, verbose, info, warn, error, found \"chatty\"",
        ),
        (
            "Butler:\n  keyValueStore:\n    enable: maybe\n",
            "Butler.keyValueStore.enable: expected true or false, found \"maybe\"",
        ),
        (
            "Butler:\n  keyValueStore:\n    maxKeysPerNamespace: lots\n",
            "Butler.keyValueStore.maxKeysPerNamespace: expected a whole number",
        ),
        (
            "Butler:\n  restServerConfig: {}\nButlerEdge:\n  limits:\n    maxBodyBytes: -1\n",
            "ButlerEdge.limits.maxBodyBytes: expected a whole number",
        ),
        (
            "Butler:\n  logLevel: info\nButlerEdge:\n  endpointsEnable:\n    admin: true\n",
            "ButlerEdge.endpointsEnable.admin: true needs client authentication, or any caller \
             could export or replace the store: set ButlerEdge.clientAuth.enable: true",
        ),
        ("Sense:\n  x: 1\n", "no `Butler:` section"),
        ("Butler:\n  logLevel: info\n   bad: [\n", "line 3"),
    ];
    for (text, message) in cases {
        let path = write(&dir, "bad.yaml", text);
        for args in [
            vec!["check-config", path.as_str()],
            vec!["--config", path.as_str()],
        ] {
            let (code, out, err) = run_cli(&args);
            assert_eq!(code, 2, "{args:?} on {text:?}: stdout {out} stderr {err}");
            assert!(
                err.contains(message),
                "{args:?}: stderr {err:?} should contain {message:?}"
            );
        }
    }
}

#[test]
fn missing_and_unreadable_files_are_config_errors() {
    let (code, _, err) = run_cli(&["check-config", "/nonexistent/butler.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/butler.yaml"), "{err}");
    let (code, _, err) = run_cli(&["--config", "/nonexistent/butler.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read config file /nonexistent/butler.yaml"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(&["check-config", &dir.path().display().to_string()]);
    assert_eq!(code, 2, "a directory is not a config file: {err}");
}

#[test]
fn version_flag_prints_the_version() {
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("butler-edge {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Starts the binary with `KV_CONFIG` + `config_extra`, `args`, the given
/// `STATE_DIRECTORY` (or none) and working directory, and reports whether the
/// database file appeared in `expected_dir` once it listens.
fn database_lands_in(
    dir: &tempfile::TempDir,
    config_extra: &str,
    args: &[&str],
    state_directory: Option<&std::path::Path>,
    cwd: &std::path::Path,
    expected_dir: &std::path::Path,
) -> bool {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let port = support::server::free_port();
    let text = KV_CONFIG
        .replace("{port}", &port.to_string())
        .replace("{max_keys}", "10")
        + config_extra;
    let config = write(dir, "data-dir.yaml", &text);
    let mut command = Command::new(support::server::BIN);
    command
        .arg("--config")
        .arg(&config)
        .args(args)
        .args(support::server::root_user_args())
        .current_dir(cwd)
        .stderr(Stdio::null());
    match state_directory {
        Some(state) => command.env("STATE_DIRECTORY", state),
        None => command.env_remove("STATE_DIRECTORY"),
    };
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "butler-edge did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let found = expected_dir.join("butler-edge.redb").exists();
    let _ = child.kill();
    let _ = child.wait();
    found
}

/// The data directory comes from `--data-dir`, else `ButlerEdge.dataDir`, else
/// systemd's `$STATE_DIRECTORY`, else `./butler-edge-data`.
#[test]
fn data_directory_resolution_order() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let configured = dir.path().join("configured");
    let explicit = dir.path().join("explicit");
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let data_dir_key = format!("ButlerEdge:\n  dataDir: {}\n", configured.display());
    let explicit_arg = explicit.display().to_string();
    assert!(database_lands_in(
        &dir,
        &data_dir_key,
        &["--data-dir", &explicit_arg],
        Some(&state),
        &cwd,
        &explicit
    ));
    assert!(database_lands_in(
        &dir,
        &data_dir_key,
        &[],
        Some(&state),
        &cwd,
        &configured
    ));
    assert!(database_lands_in(&dir, "", &[], Some(&state), &cwd, &state));
    assert!(database_lands_in(
        &dir,
        "",
        &[],
        None,
        &cwd,
        &cwd.join("butler-edge-data")
    ));
}
