//! A/B updates on this machine, with the real RAUC (`support::rauc::Rig`: Debian's rauc 1.8
//! as a service on a private bus, file-backed slots, its GRUB backend on a grubenv file):
//! `butler-edge install-update` installs a trusted bundle and records the trial, refuses a
//! bundle signed by another key or damaged with RAUC's reason and changes nothing; and
//! `PUT /v4/admin/update` on the real binary streams a bundle to disk, hands it to the real
//! installer and answers with what was installed and what boots next, or 422, 409, 403, 413,
//! 415, 503, 504; `butler-edge confirm-boot` gives up a trial that never gets healthy (marks
//! it bad, reboots) and reports the rollback back on the old slot, with the trial's reason or
//! "never confirmed"; `/health`, `/metrics` and the console name the version, slot and next
//! boot. RAUC's service is restarted with `--override-boot-slot` to play a boot; the healthy
//! path of confirm-boot (systemd says the service is active) and real reboots are
//! image/update-test's, in qemu.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::pki::{Ca, CertSpec, Issued};
use support::rauc::{Rig, Signer};
use support::server::{Launch, Server, TLS_CONFIG};
use support::tls_client::{Versions, client_config};

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// What the service would write: the bundle and a request for it.
fn hand_over(update_dir: &Path, bundle: &Path, id: &str) {
    std::fs::create_dir_all(update_dir).unwrap();
    std::fs::copy(bundle, update_dir.join("bundle.raucb")).unwrap();
    std::fs::write(update_dir.join("request.json"), request(id).to_string()).unwrap();
}

/// A trusted bundle of `version` installed through the real installer: the update directory.
fn installed(rig: &Rig, version: &str) -> PathBuf {
    let bundle = rig.bundle(
        version,
        version,
        "butler-edge",
        Signer::Trusted,
        version.as_bytes(),
    );
    let update = rig.dir.path().join("update");
    hand_over(&update, &bundle, &format!("req-{version}"));
    let (ok, output) = rig.install_update(&update);
    assert!(ok, "{output}");
    update
}

fn request(id: &str) -> Value {
    json!({"id": id, "reboot": false, "source": "api", "sha256": "00ff",
        "requestedBy": "test", "at": "2026-12-01T23:00:00Z"})
}

/// One screen of `butler-edge console --once` with `args` (and no config).
fn console_screen(args: &[&std::ffi::OsStr]) -> String {
    let output = std::process::Command::new(support::server::BIN)
        .args(["console", "--once", "--config", "/nonexistent"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn install_update_installs_a_trusted_bundle_and_records_the_trial() {
    let Some(rig) = Rig::new("install_update_installs_a_trusted_bundle") else {
        return;
    };
    let image = b"root file system of version 2.0.0".repeat(1000);
    let bundle = rig.bundle("v2", "2.0.0", "butler-edge", Signer::Trusted, &image);
    let update = rig.dir.path().join("update");
    hand_over(&update, &bundle, "req-1");
    // As the service leaves it: owned by its unprivileged user, mode 0600.
    let bundle_file = update.join("bundle.raucb");
    std::os::unix::fs::chown(&bundle_file, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(
        &bundle_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (ok, output) = rig.install_update(&update);
    assert!(ok, "{output}");
    let result = read_json(&update.join("result.json"));
    assert_eq!(result["id"], "req-1", "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(
        result["installed"],
        json!({"slot": "B", "version": "2.0.0"})
    );
    assert_eq!(result["nextBoot"], json!({"slot": "B", "version": "2.0.0"}));
    assert_eq!(result["rebooting"], false);
    assert!(!update.join("request.json").exists() && !update.join("bundle.raucb").exists());
    // RAUC wrote slot B and made it the next boot.
    assert_eq!(&rig.slot_b()[..image.len()], &image[..]);
    assert!(rig.grubenv().contains("ORDER=B A"), "{}", rig.grubenv());
    // The trial is remembered for confirm-boot, and the digest for the medium.
    let last = read_json(&update.join("last-install.json"));
    assert_eq!(last["state"], "pending", "{last}");
    assert_eq!(last["from"], json!({"slot": "A", "version": "1.0.0"}));
    assert_eq!(last["installed"]["slot"], "B");
    assert_eq!(last["bootId"], boot_id());
    let digests = read_json(&update.join("installed-sha256.json"));
    assert_eq!(digests["sha256"], json!(["00ff"]));
    let slots = read_json(&rig.slots_file());
    assert_eq!(slots["booted"], json!({"slot": "A", "version": "1.0.0"}));
    assert_eq!(slots["nextBoot"], json!({"slot": "B", "version": "2.0.0"}));
    assert_eq!(slots["trial"], false);
}

#[test]
fn install_update_refuses_a_foreign_or_damaged_bundle_and_changes_nothing() {
    let Some(rig) = Rig::new("install_update_refuses_a_foreign_or_damaged_bundle") else {
        return;
    };
    let before_env = rig.grubenv();
    let before_b = rig.slot_b();
    let foreign = rig.bundle("foreign", "2.0.0", "butler-edge", Signer::Stranger, b"evil");
    let good = rig.bundle(
        "good",
        "2.0.0",
        "butler-edge",
        Signer::Trusted,
        &[7u8; 8192],
    );
    let damaged = rig.dir.path().join("damaged.raucb");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[100..110].copy_from_slice(b"0123456789");
    std::fs::write(&damaged, bytes).unwrap();
    let other_product = rig.bundle("other", "2.0.0", "someone-else", Signer::Trusted, b"x");
    let update = rig.dir.path().join("update");
    for (id, bundle, reason) in [
        ("foreign", &foreign, "signature verification failed"),
        ("damaged", &damaged, "signature verification failed"),
        ("other-product", &other_product, "Compatible mismatch"),
    ] {
        hand_over(&update, bundle, id);
        let (ok, output) = rig.install_update(&update);
        assert!(
            ok,
            "a refusal is an answer, not a failure of the installer: {output}"
        );
        let result = read_json(&update.join("result.json"));
        assert_eq!(result["id"], id, "{result}");
        assert_eq!(result["ok"], false, "{result}");
        assert_eq!(result["failure"], "refused", "{result}");
        let error = result["error"].as_str().unwrap();
        assert!(error.contains(reason), "{} -> {error}", bundle.display());
        assert!(!update.join("request.json").exists());
        assert!(!update.join("last-install.json").exists());
        assert_eq!(rig.grubenv(), before_env);
        assert_eq!(rig.slot_b(), before_b);
        // The service reads and removes the answer.
        std::fs::remove_file(update.join("result.json")).unwrap();
    }
    // An answer nobody collects (the medium's installs have no caller) is on the console.
    hand_over(&update, &foreign, "from-the-medium");
    assert!(rig.install_update(&update).0);
    let screen = console_screen(&["--update-dir".as_ref(), update.as_os_str()]);
    assert!(
        screen.contains("last update NOT INSTALLED")
            && screen.contains("signature verification failed"),
        "{screen}"
    );
}

#[test]
fn an_install_cut_off_by_a_restart_is_not_run_again() {
    let Some(rig) = Rig::new("an_install_cut_off_by_a_restart") else {
        return;
    };
    let before = rig.grubenv();
    let bundle = rig.bundle("v2", "2.0.0", "butler-edge", Signer::Trusted, b"v2");
    let update = rig.dir.path().join("update");
    hand_over(&update, &bundle, "req-old");
    // What an install that lost power leaves: its marker, beside the request.
    std::fs::write(
        update.join("installing.json"),
        request("req-old").to_string(),
    )
    .unwrap();
    let (ok, output) = rig.install_update(&update);
    assert!(ok, "{output}");
    let result = read_json(&update.join("result.json"));
    assert_eq!(result["ok"], false);
    assert!(
        result["error"].as_str().unwrap().contains("interrupted"),
        "{result}"
    );
    assert_eq!(rig.grubenv(), before);
    assert!(!update.join("request.json").exists() && !update.join("bundle.raucb").exists());
    assert!(!update.join("installing.json").exists());
}

/// The service with the admin group on for `admin` (and not for `reader`), HTTPS with
/// client certificates, and `update` settings.
struct Api {
    server: Server,
    server_ca: Ca,
    admin: Issued,
    reader: Issued,
}

impl Api {
    fn start(rauc_conf: &Path, extra_update: &str, extra_endpoints: &str) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let (server_ca, callers) = support::pki::server_and_callers_cas(dir.path());
        let admin = callers.issue(&CertSpec::client("admin"));
        let reader = callers.issue(&CertSpec::client("reader"));
        let config = format!(
            "{TLS_CONFIG}ButlerEdge:
  endpointsEnable:
    admin: true
{extra_endpoints}  clientAuth:
    enable: true
    ca: [{{dir}}/callers-ca.pem]
    clients:
      - commonName: admin
        endpoints: [admin, ping, health, metrics]
      - commonName: reader
        endpoints: [ping, kvRead]
  update:
    raucSystemConf: {rauc}
{extra_update}  limits:
    maxBodyBytesInFlight: 4194304
",
            rauc = rauc_conf.display()
        );
        let path = dir.path().to_path_buf();
        let server = Launch::new(&config, &path).in_dir(dir).spawn();
        Api {
            server,
            server_ca,
            admin,
            reader,
        }
    }

    fn client(&self, who: &Issued) -> reqwest::blocking::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = client_config(
            &self.server_ca.cert_pem,
            Some(who),
            &[b"http/1.1"],
            Versions::Both,
        );
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    }

    fn update_dir(&self) -> PathBuf {
        self.server.data_dir.join("update")
    }

    /// `PUT /v4/admin/update{query}` as `who` with `body`.
    fn put(
        &self,
        who: &Issued,
        query: &str,
        body: reqwest::blocking::Body,
        content_type: &str,
    ) -> (u16, Value) {
        let response = self
            .client(who)
            .put(self.server.https_url(&format!("/v4/admin/update{query}")))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("PUT: {e}; log:\n{}", self.server.log()));
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Plays the root side: when the service's request appears, runs the real installer once.
fn installer(rig: &Rig, update_dir: PathBuf) -> impl FnOnce() -> String + '_ {
    move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !update_dir.join("request.json").exists() {
            assert!(
                Instant::now() < deadline,
                "no request.json from the service"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rig.install_update(&update_dir).1
    }
}

fn put_with_installer(rig: &Rig, api: &Api, bundle: &Path, query: &str) -> (u16, Value) {
    std::thread::scope(|s| {
        let root_side = s.spawn(installer(rig, api.update_dir()));
        let body = std::fs::read(bundle).unwrap();
        let answer = api.put(&api.admin, query, body.into(), "application/octet-stream");
        let output = root_side.join().unwrap();
        eprintln!("install-update: {output}");
        answer
    })
}

#[test]
fn an_admin_puts_a_bundle_and_learns_what_was_installed_and_boots_next() {
    let Some(rig) = Rig::new("an_admin_puts_a_bundle") else {
        return;
    };
    let api = Api::start(&rig.system_conf, "", "");
    let foreign = rig.bundle("foreign", "2.0.0", "butler-edge", Signer::Stranger, b"evil");
    let (status, body) = put_with_installer(&rig, &api, &foreign, "");
    support::butler::assert_butler_error(status, &body, 422, "signature verification failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"),
        "{body}"
    );
    assert!(rig.grubenv().contains("ORDER=A B"), "{}", rig.grubenv());

    let bundle = rig.bundle(
        "v2",
        "2.0.0",
        "butler-edge",
        Signer::Trusted,
        b"version two",
    );
    let (status, body) = put_with_installer(&rig, &api, &bundle, "?reboot=true");
    assert_eq!(status, 200, "{body}; log:\n{}", api.server.log());
    assert_eq!(
        body,
        json!({"installed": {"slot": "B", "version": "2.0.0"},
               "nextBoot": {"slot": "B", "version": "2.0.0"}, "rebooting": true})
    );
    assert!(rig.grubenv().contains("ORDER=B A"), "{}", rig.grubenv());
    // The installer got exactly the bytes sent, and both sides cleaned up.
    let last: Value = read_json(&api.update_dir().join("last-install.json"));
    let expected = support::sha256_hex(&std::fs::read(&bundle).unwrap());
    assert_eq!(last["sha256"], expected);
    for leftover in [
        "request.json",
        "bundle.raucb",
        "bundle.raucb.partial",
        "result.json",
    ] {
        assert!(
            !api.update_dir().join(leftover).exists(),
            "{leftover} left behind"
        );
    }
}

#[test]
fn the_update_endpoint_refuses_what_it_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let rauc_conf = dir.path().join("system.conf");
    std::fs::write(&rauc_conf, "[system]\ncompatible=butler-edge\n").unwrap();
    let api = Api::start(
        &rauc_conf,
        "    maxBundleBytes: 1048576\n    installTimeoutMs: 1500\n",
        "",
    );
    let small = || reqwest::blocking::Body::from(vec![1u8; 1000]);
    // Not an admin: 403 naming the caller, nothing stored.
    let (status, body) = api.put(&api.reader, "", small(), "application/octet-stream");
    support::butler::assert_butler_error(status, &body, 403, "reader");
    assert!(!api.update_dir().exists());
    // Not a bundle's content type.
    let (status, body) = api.put(&api.admin, "", small(), "application/json");
    support::butler::assert_butler_error(status, &body, 415, "application/octet-stream");
    let (status, body) = api.put(
        &api.admin,
        "?reboot=yes",
        small(),
        "application/octet-stream",
    );
    support::butler::assert_butler_error(status, &body, 400, "reboot");
    // Too large, announced or streamed without a length: 413 and nothing left on disk. (Just
    // over the limit, so the rest of the body fits in the socket buffers when the server
    // answers and closes.)
    let big = vec![0u8; (1 << 20) + 4096];
    let (status, body) = api.put(
        &api.admin,
        "",
        big.clone().into(),
        "application/octet-stream",
    );
    support::butler::assert_butler_error(status, &body, 413, "maxBundleBytes");
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(big));
    let (status, body) = api.put(&api.admin, "", chunked, "application/octet-stream");
    support::butler::assert_butler_error(status, &body, 413, "maxBundleBytes");
    assert!(!api.update_dir().join("bundle.raucb.partial").exists());
    assert!(!api.update_dir().join("request.json").exists());
    // Nobody installs: the request is handed over and the call gives up waiting (504).
    let (status, body) = api.put(&api.admin, "", small(), "application/octet-stream");
    support::butler::assert_butler_error(status, &body, 504, "butler-edge-update.service");
    let request = read_json(&api.update_dir().join("request.json"));
    assert_eq!(request["requestedBy"], "admin");
    assert_eq!(request["sha256"], support::sha256_hex(&[1u8; 1000]));
    // While that request is pending, another update is refused.
    let (status, body) = api.put(&api.admin, "", small(), "application/octet-stream");
    support::butler::assert_butler_error(status, &body, 409, "already");

    // No room for the bundle beside the space kept for the store: 507, nothing stored.
    let full = Api::start(&rauc_conf, "  minFreeDiskBytes: 1000000000000000000\n", "");
    let (status, body) = full.put(&full.admin, "", small(), "application/octet-stream");
    support::butler::assert_butler_error(status, &body, 507, "minFreeDiskBytes");
    assert!(!full.update_dir().join("bundle.raucb").exists());

    // A plain package install (no RAUC config): 503 saying so.
    let plain = Api::start(&dir.path().join("absent.conf"), "", "    health: true\n");
    let (status, body) = plain.put(&plain.admin, "", small(), "application/octet-stream");
    support::butler::assert_butler_error(status, &body, 503, "A/B appliance");
    let health = plain
        .client(&plain.admin)
        .get(plain.server.https_url("/health"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["appliance"]["status"], "not an A/B appliance",
        "{health}"
    );
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_large_bundle_is_streamed_to_disk_not_held_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let rauc_conf = dir.path().join("system.conf");
    std::fs::write(&rauc_conf, "[system]\ncompatible=butler-edge\n").unwrap();
    let api = Api::start(&rauc_conf, "    installTimeoutMs: 1000\n", "");
    const SIZE: usize = 96 << 20;
    let before = peak_rss(api.server.pid());
    // A body larger than all request bodies together may hold (maxBodyBytesInFlight 4 MiB).
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let expected = support::sha256_hex(&data);
    let (status, body) = api.put(&api.admin, "", data.into(), "application/octet-stream");
    support::butler::assert_butler_error(status, &body, 504, "has not answered");
    // Held in memory, the body alone would be SIZE; streamed, the growth is buffers and
    // the allocator's (about 25 MB in a debug build).
    let grown = peak_rss(api.server.pid()).saturating_sub(before);
    assert!(
        grown < (SIZE as u64) / 2,
        "the service's peak memory grew by {grown} bytes for a {SIZE}-byte bundle"
    );
    let stored = api.update_dir().join("bundle.raucb");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), SIZE as u64);
    assert_eq!(
        read_json(&api.update_dir().join("request.json"))["sha256"],
        expected
    );
}

/// Plays "the machine rebooted": the install is from an earlier boot.
fn as_if_rebooted(update_dir: &Path) {
    let path = update_dir.join("last-install.json");
    let mut last = read_json(&path);
    last["bootId"] = json!("the boot the update was installed in");
    std::fs::write(&path, last.to_string()).unwrap();
}

#[test]
fn a_trial_that_never_gets_healthy_is_given_up_and_reported_as_rolled_back() {
    let Some(mut rig) = Rig::new("a_trial_that_never_gets_healthy") else {
        return;
    };
    let update = installed(&rig, "3.0.0");
    // GRUB starts B as a trial; butler-edge never becomes active there.
    as_if_rebooted(&update);
    rig.boot("B");
    std::fs::write(
        rig.os_release(),
        "IMAGE_ID=butler-edge\nIMAGE_VERSION=3.0.0\n",
    )
    .unwrap();
    let (ok, output) = rig.confirm_boot(&update, 1);
    assert!(ok, "gave up and rebooted: {output}");
    assert!(output.contains("trial boot FAILED"), "{output}");
    let failed = read_json(&update.join("trial-failed.json"));
    assert_eq!(failed["slot"], "B", "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("butler-edge was not healthy within 1 s of boot"),
        "{failed}"
    );
    assert!(
        rig.grubenv().contains("B_OK=0"),
        "B marked bad: {}",
        rig.grubenv()
    );
    // Back on A: the rollback is detected, with the trial's reason.
    rig.boot("A");
    std::fs::write(
        rig.os_release(),
        "IMAGE_ID=butler-edge\nIMAGE_VERSION=1.0.0\n",
    )
    .unwrap();
    let (_, output) = rig.confirm_boot(&update, 1);
    assert!(output.contains("ROLLED BACK"), "{output}");
    let last = read_json(&update.join("last-install.json"));
    assert_eq!(last["state"], "rolledBack", "{last}");
    let slots = read_json(&rig.slots_file());
    assert_eq!(slots["booted"], json!({"slot": "A", "version": "1.0.0"}));
    assert_eq!(slots["nextBoot"]["slot"], "A", "{slots}");
    let rollback = &slots["rollback"];
    assert_eq!(rollback["from"], json!({"slot": "B", "version": "3.0.0"}));
    assert_eq!(rollback["to"], json!({"slot": "A", "version": "1.0.0"}));
    assert_eq!(rollback["reason"], failed["reason"]);
    assert!(rig.grubenv().contains("ORDER=A B"), "{}", rig.grubenv());
}

#[test]
fn a_trial_that_never_reports_back_is_a_rollback_never_confirmed() {
    let Some(rig) = Rig::new("a_trial_that_never_reports_back") else {
        return;
    };
    let update = installed(&rig, "2.0.0");
    // The same boot: no trial, no rollback.
    let (_, output) = rig.confirm_boot(&update, 1);
    assert!(!output.contains("ROLLED BACK"), "{output}");
    assert_eq!(
        read_json(&update.join("last-install.json"))["state"],
        "pending"
    );
    // B hung or lost power before confirm-boot ran; GRUB came back to A.
    as_if_rebooted(&update);
    let (_, output) = rig.confirm_boot(&update, 1);
    assert!(output.contains("ROLLED BACK"), "{output}");
    let slots = read_json(&rig.slots_file());
    let reason = slots["rollback"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("never confirmed"), "{slots}");
}

#[test]
fn health_metrics_and_console_name_the_version_slot_and_next_boot() {
    let Some(rig) = Rig::new("health_metrics_and_console_name_the_version") else {
        return;
    };
    installed(&rig, "2.0.0");
    let api = Api::start(
        &rig.system_conf,
        &format!(
            "    slotsFile: {}\n    osRelease: {}\n",
            rig.slots_file().display(),
            rig.os_release().display()
        ),
        "    health: true\n    metrics: true\n",
    );
    let get = |path: &str| {
        api.client(&api.admin)
            .get(api.server.https_url(path))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let health: Value = serde_json::from_str(&get("/health")).unwrap();
    let appliance = &health["appliance"];
    assert_eq!(appliance["version"], "1.0.0", "{health}");
    assert_eq!(appliance["slot"], "A");
    assert_eq!(
        appliance["nextBoot"],
        json!({"slot": "B", "version": "2.0.0"})
    );
    assert_eq!(appliance["lastUpdate"]["state"], "pending");
    assert_eq!(appliance["rollback"], Value::Null);
    let metrics = get("/metrics");
    assert!(
        metrics.contains("butler_edge_appliance_info{version=\"1.0.0\",slot=\"A\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("butler_edge_appliance_update_rolled_back 0"),
        "{metrics}"
    );
    let (slots, os_release) = (rig.slots_file(), rig.os_release());
    let screen = console_screen(&[
        "--rauc-conf".as_ref(),
        rig.system_conf.as_os_str(),
        "--slots-file".as_ref(),
        slots.as_os_str(),
        "--os-release".as_ref(),
        os_release.as_os_str(),
    ]);
    assert!(
        screen.contains("system:       image 1.0.0 on slot A; next boot: slot B (2.0.0)"),
        "{screen}"
    );
    // Without RAUC's config, the console says it is no A/B appliance.
    let screen = console_screen(&["--rauc-conf".as_ref(), "/nonexistent".as_ref()]);
    assert!(
        screen.contains("system:       not an A/B appliance"),
        "{screen}"
    );
}
