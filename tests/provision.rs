//! `butler-edge provision` with real files: a scratch directory stands for the appliance's
//! root file system (`--root`), a directory for the mounted provisioning medium. A good medium
//! is applied as a new generation (config, Sense's certificates, callers' CA, static network,
//! NTP, host name); each kind of bad medium is refused with a message naming the file, the key
//! and what was expected, and leaves every file under the root exactly as it was. An
//! `update.raucb` on the medium is handed to the update installer, once per bundle.

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::pki::{Ca, KeyKind, SenseCerts};
use support::server::BIN;

/// The appliance's shipped config (what a fresh image has as /etc/butler-edge/config.yaml).
const IMAGE_CONFIG: &str = include_str!("../image/config.yaml");
const RECORD: &str = "var/lib/butler-edge-appliance/provisioning.json";

struct Appliance {
    root: tempfile::TempDir,
}

impl Appliance {
    /// A fresh image: the shipped config and the PKI `butler-edge init` makes on first boot.
    fn new() -> Appliance {
        let appliance = Appliance::without_pki();
        support::appliance::init_pki(&appliance.path("etc/butler-edge/pki"));
        appliance
    }

    /// The very first boot: provisioning runs before `butler-edge init` has made the PKI.
    fn without_pki() -> Appliance {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc/butler-edge");
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(root.path().join(RECORD).parent().unwrap()).unwrap();
        fs::write(etc.join("config.yaml"), IMAGE_CONFIG).unwrap();
        fs::write(
            root.path().join("etc/hosts"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tbutler-edge\n",
        )
        .unwrap();
        Appliance { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn provision(&self, medium: Option<&Path>) -> (i32, String) {
        let mut cmd = Command::new(BIN);
        cmd.arg("provision").arg("--root").arg(self.root.path());
        if let Some(medium) = medium {
            cmd.arg("--medium").arg(medium);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn record(&self) -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(self.path(RECORD)).unwrap()).unwrap()
    }

    /// Every file, directory and symlink under the root (but the provisioning record), with
    /// contents, modes and link targets.
    fn tree(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(self.root.path(), self.root.path(), &mut out);
        out.remove(RECORD);
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            out.insert(
                rel,
                format!("-> {}", fs::read_link(&path).unwrap().display()),
            );
        } else if meta.is_dir() {
            out.insert(rel, format!("dir {mode:o}"));
            walk(root, &path, out);
        } else {
            out.insert(
                rel,
                format!(
                    "{mode:o} {}",
                    String::from_utf8_lossy(&fs::read(&path).unwrap())
                ),
            );
        }
    }
}

/// A complete, valid medium: QRS set up with Sense's exported certificates, the site's own
/// callers CA, a static address, NTP servers and a host name.
struct Medium {
    dir: tempfile::TempDir,
    sense: SenseCerts,
}

const QRS_PORT: u16 = 4242;

fn site_config(extra_client_auth: &str) -> String {
    // The shipped config with QRS filled in and the site's callers CA added.
    let config = IMAGE_CONFIG.replace(
        "        ca:\n            - /etc/butler-edge/pki/ca.crt\n",
        &format!(
            "        ca:\n            - /etc/butler-edge/pki/ca.crt\n            - /etc/butler-edge/site/callers/site-ca.pem\n{extra_client_auth}"
        ),
    );
    assert!(
        config.contains("site-ca.pem"),
        "image/config.yaml changed shape"
    );
    let qrs = format!(
        "    configQRS:\n        authentication: certificates\n        host: sense.example.com\n        port: {QRS_PORT}\n        useSSL: true\n        headers:\n            static:\n                - name: X-Qlik-User\n                  value: UserDirectory=Internal;UserId=sa_repository\n    cert:\n        clientCert: /etc/butler-edge/site/qrs/client.pem\n        clientCertKey: /etc/butler-edge/site/qrs/client_key.pem\n        clientCertCA: /etc/butler-edge/site/qrs/root.pem\n"
    );
    config.replacen("\nButlerEdge:", &format!("{qrs}\nButlerEdge:"), 1)
}

impl Medium {
    fn good() -> Medium {
        let dir = tempfile::tempdir().unwrap();
        let sense = SenseCerts::new(&["sense.example.com"], KeyKind::RsaPkcs1);
        let m = Medium { dir, sense };
        m.put("butler-edge.yaml", &site_config(""));
        fs::create_dir_all(m.dir.path().join("qrs")).unwrap();
        fs::copy(&m.sense.client.cert, m.dir.path().join("qrs/client.pem")).unwrap();
        fs::copy(&m.sense.client.key, m.dir.path().join("qrs/client_key.pem")).unwrap();
        fs::copy(&m.sense.root, m.dir.path().join("qrs/root.pem")).unwrap();
        m.put("callers/site-ca.pem", &Ca::new("Site callers CA").cert_pem);
        m.put(
            "appliance.yaml",
            "hostname: edge1\nnetwork:\n  address: 10.0.2.50/24\n  gateway: 10.0.2.2\n  dns: [10.0.2.3]\nntp: [ntp1.example.com, 10.0.2.2]\n",
        );
        // What Windows leaves on a FAT volume is ignored.
        m.put("System Volume Information/IndexerVolumeGuid", "x");
        m
    }

    fn put(&self, rel: &str, text: &str) {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[test]
fn good_medium_is_applied_as_one_generation() {
    let appliance = Appliance::new();
    let medium = Medium::good();
    let (code, out) = appliance.provision(Some(medium.path()));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied the medium"), "{out}");

    // The switch: site -> generations/<id>, config.yaml -> site/config.yaml.
    let site = fs::read_link(appliance.path("etc/butler-edge/site")).unwrap();
    assert!(site.starts_with("generations"), "{site:?}");
    assert_eq!(
        fs::read_link(appliance.path("etc/butler-edge/config.yaml")).unwrap(),
        Path::new("site/config.yaml")
    );
    let generation = appliance.path("etc/butler-edge").join(&site);
    assert_eq!(
        fs::read_to_string(generation.join("config.yaml")).unwrap(),
        site_config("")
    );
    for file in [
        "qrs/client.pem",
        "qrs/client_key.pem",
        "qrs/root.pem",
        "callers/site-ca.pem",
    ] {
        let mode = fs::metadata(generation.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            mode, 0o640,
            "{file} must be readable by the service's group only"
        );
    }
    assert_eq!(
        fs::read(generation.join("qrs/client_key.pem")).unwrap(),
        fs::read(&medium.sense.client.key).unwrap()
    );
    assert!(!generation.join("System Volume Information").exists());

    // The machine settings.
    let network =
        fs::read_to_string(appliance.path("etc/systemd/network/10-butler-edge-static.network"))
            .unwrap();
    assert!(
        network.contains("DHCP=no\nAddress=10.0.2.50/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n"),
        "{network}"
    );
    let ntp =
        fs::read_to_string(appliance.path("etc/systemd/timesyncd.conf.d/50-butler-edge.conf"))
            .unwrap();
    assert!(ntp.contains("NTP=ntp1.example.com 10.0.2.2\n"), "{ntp}");
    assert_eq!(
        fs::read_to_string(appliance.path("etc/hostname")).unwrap(),
        "edge1\n"
    );
    assert!(
        fs::read_to_string(appliance.path("etc/hosts"))
            .unwrap()
            .contains("127.0.1.1\tedge1\n")
    );

    let record = appliance.record();
    assert_eq!(record["outcome"], "applied");
    assert_eq!(
        record["generation"],
        site.file_name().unwrap().to_str().unwrap()
    );

    // The same medium at the next boot changes nothing.
    let before = appliance.tree();
    let (code, out) = appliance.provision(Some(medium.path()));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already applied"), "{out}");
    assert_eq!(appliance.tree(), before);
    assert_eq!(appliance.record()["outcome"], "unchanged");
}

#[test]
fn first_boot_medium_is_applied_before_the_appliance_pki_exists() {
    let appliance = Appliance::without_pki();
    let medium = Medium::good();
    let (code, out) = appliance.provision(Some(medium.path()));
    assert_eq!(code, 0, "{out}");
    // A broken callers CA is still caught then.
    let bad = Medium::good();
    bad.put("callers/site-ca.pem", "not a certificate\n");
    let before = appliance.tree();
    let (code, out) = appliance.provision(Some(bad.path()));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ButlerEdge.clientAuth.ca"), "{out}");
    assert_eq!(appliance.tree(), before);
}

#[test]
fn a_rotated_certificate_becomes_a_new_generation_and_the_previous_one_is_kept() {
    let appliance = Appliance::new();
    let first = Medium::good();
    assert_eq!(appliance.provision(Some(first.path())).0, 0);
    let gen1 = fs::read_link(appliance.path("etc/butler-edge/site")).unwrap();
    // A second medium: new Sense certificates (same layout).
    let second = Medium::good();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, out) = appliance.provision(Some(second.path()));
    assert_eq!(code, 0, "{out}");
    let gen2 = fs::read_link(appliance.path("etc/butler-edge/site")).unwrap();
    assert_ne!(gen1, gen2);
    assert_eq!(
        fs::read(appliance.path("etc/butler-edge/site/qrs/client.pem")).unwrap(),
        fs::read(&second.sense.client.cert).unwrap()
    );
    assert!(
        appliance.path("etc/butler-edge").join(&gen1).is_dir(),
        "previous generation kept"
    );

    // A medium with only appliance.yaml keeps the config and certificates as they are.
    let third = tempfile::tempdir().unwrap();
    fs::write(third.path().join("appliance.yaml"), "hostname: edge2\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, out) = appliance.provision(Some(third.path()));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        fs::read(appliance.path("etc/butler-edge/site/qrs/client.pem")).unwrap(),
        fs::read(&second.sense.client.cert).unwrap()
    );
    assert_eq!(
        fs::read_to_string(appliance.path("etc/hostname")).unwrap(),
        "edge2\n"
    );
    // DHCP again: the static file is gone.
    assert!(
        !appliance
            .path("etc/systemd/network/10-butler-edge-static.network")
            .exists()
    );
    // Only the current generation and the one before it remain.
    assert!(!appliance.path("etc/butler-edge").join(&gen1).exists());
    assert!(appliance.path("etc/butler-edge").join(&gen2).is_dir());
}

/// Each bad medium, applied over a good one: refused, every problem named, nothing changed.
#[test]
fn every_kind_of_bad_medium_is_refused_and_changes_nothing() {
    let appliance = Appliance::new();
    let good = Medium::good();
    assert_eq!(appliance.provision(Some(good.path())).0, 0);
    let other = SenseCerts::new(&["sense.example.com"], KeyKind::EcP256Pkcs8);

    type Breaker = Box<dyn Fn(&Medium)>;
    let cases: Vec<(&str, Breaker, &[&str])> = vec![
        (
            "YAML syntax",
            Box::new(|m: &Medium| m.put("butler-edge.yaml", "Butler:\n  logLevel: [info\n")),
            &["butler-edge.yaml", "not valid YAML"],
        ),
        (
            "a config key out of range",
            Box::new(|m: &Medium| {
                m.put(
                    "butler-edge.yaml",
                    &site_config("").replace("serverPort: 8443", "serverPort: 80800"),
                )
            }),
            &[
                "butler-edge.yaml",
                "Butler.restServerConfig.serverPort",
                "expected a port",
            ],
        ),
        (
            "a QRS key that does not match its certificate",
            Box::new(move |m: &Medium| {
                fs::copy(&other.client.key, m.path().join("qrs/client_key.pem")).unwrap();
            }),
            &[
                "Butler.cert.clientCertKey",
                "/etc/butler-edge/site/qrs/client_key.pem",
            ],
        ),
        (
            "a callers CA that is not a certificate",
            Box::new(|m: &Medium| {
                m.put("callers/site-ca.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n")
            }),
            &[
                "ButlerEdge.clientAuth.ca",
                "/etc/butler-edge/site/callers/site-ca.pem",
            ],
        ),
        (
            "a file the config names is on neither the medium nor the appliance",
            Box::new(|m: &Medium| {
                m.put(
                    "butler-edge.yaml",
                    &site_config("").replace("qrs/root.pem", "qrs/root-ca.pem"),
                )
            }),
            &[
                "Butler.cert.clientCertCA",
                "/etc/butler-edge/site/qrs/root-ca.pem",
            ],
        ),
        (
            "a static address without its prefix",
            Box::new(|m: &Medium| m.put("appliance.yaml", "network:\n  address: 10.0.2.50\n")),
            &["appliance.yaml", "network.address", "prefix length"],
        ),
        (
            "a misspelt file name",
            Box::new(|m: &Medium| {
                fs::rename(
                    m.path().join("qrs/client_key.pem"),
                    m.path().join("qrs/client-key.pem"),
                )
                .unwrap()
            }),
            &[
                "qrs/client-key.pem",
                "unexpected file",
                "qrs/client_key.pem",
            ],
        ),
    ];
    for (what, breaker, expected) in cases {
        let medium = Medium::good();
        breaker(&medium);
        let before = appliance.tree();
        let (code, out) = appliance.provision(Some(medium.path()));
        assert_eq!(code, 1, "{what}: expected a refusal:\n{out}");
        assert!(out.contains("REFUSED"), "{what}: {out}");
        for needle in expected {
            assert!(
                out.contains(needle),
                "{what}: the message lacks {needle:?}:\n{out}"
            );
        }
        assert!(
            !out.contains(".staging-"),
            "{what}: message names the staging dir: {out}"
        );
        assert_eq!(appliance.tree(), before, "{what}: something changed");
        let record = appliance.record();
        assert_eq!(record["outcome"], "refused", "{what}");
        let problems = record["problems"].as_array().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.as_str().unwrap().contains(expected[0])),
            "{what}: the record does not carry the problem: {record}"
        );
    }
    // The good medium still counts as applied: re-attaching it changes nothing.
    assert_eq!(appliance.provision(Some(good.path())).0, 0);
}

#[test]
fn a_refused_first_medium_leaves_the_shipped_config_in_place() {
    let appliance = Appliance::new();
    let medium = Medium::good();
    medium.put("butler-edge.yaml", "Butler:\n  logLevel: loud\n");
    let before = appliance.tree();
    let (code, out) = appliance.provision(Some(medium.path()));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Butler.logLevel"), "{out}");
    assert_eq!(appliance.tree(), before);
    assert!(
        fs::symlink_metadata(appliance.path("etc/butler-edge/config.yaml"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn no_medium_is_recorded_and_changes_nothing() {
    let appliance = Appliance::new();
    let before = appliance.tree();
    let (code, out) = appliance.provision(None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no provisioning medium"), "{out}");
    assert_eq!(appliance.tree(), before);
    assert_eq!(appliance.record()["outcome"], "no medium");
}

/// An A/B appliance: RAUC's config exists.
fn with_rauc(appliance: &Appliance) {
    fs::create_dir_all(appliance.path("etc/rauc")).unwrap();
    fs::write(
        appliance.path("etc/rauc/system.conf"),
        "[system]\ncompatible=butler-edge\n",
    )
    .unwrap();
}

#[test]
fn an_update_bundle_on_the_medium_is_handed_to_the_installer_once() {
    let appliance = Appliance::new();
    with_rauc(&appliance);
    let medium = tempfile::tempdir().unwrap();
    let bundle = b"a RAUC bundle (RAUC checks its signature when it installs)".repeat(100);
    fs::write(medium.path().join("update.raucb"), &bundle).unwrap();
    let (code, out) = appliance.provision(Some(medium.path()));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("handed to the installer"), "{out}");
    let update = appliance.path("var/lib/butler-edge/update");
    assert_eq!(fs::read(update.join("bundle.raucb")).unwrap(), bundle);
    let request: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(update.join("request.json")).unwrap()).unwrap();
    assert_eq!(request["source"], "medium");
    assert_eq!(request["reboot"], true);
    assert_eq!(request["sha256"], support::sha256_hex(&bundle));
    let record = appliance.record();
    assert_eq!(record["outcome"], "update only");
    assert!(
        record["update"].as_str().unwrap().contains("handed"),
        "{record}"
    );

    // Installed (and kept or rolled back): the same medium at the next boot installs nothing.
    fs::remove_file(update.join("request.json")).unwrap();
    fs::remove_file(update.join("bundle.raucb")).unwrap();
    fs::write(
        update.join("installed-sha256.json"),
        serde_json::json!({"sha256": [support::sha256_hex(&bundle)]}).to_string(),
    )
    .unwrap();
    let (code, out) = appliance.provision(Some(medium.path()));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("was installed before; not installed again"),
        "{out}"
    );
    assert!(!update.join("request.json").exists());
    assert!(!update.join("bundle.raucb").exists());
}

#[test]
fn an_update_bundle_is_not_handed_over_with_a_refused_medium_or_without_rauc() {
    let appliance = Appliance::new();
    with_rauc(&appliance);
    let medium = tempfile::tempdir().unwrap();
    fs::write(medium.path().join("update.raucb"), b"bundle").unwrap();
    fs::write(
        medium.path().join("butler-edge.yaml"),
        "Butler: [not, a, mapping]\n",
    )
    .unwrap();
    let before = appliance.tree();
    let (code, out) = appliance.provision(Some(medium.path()));
    assert_ne!(code, 0, "{out}");
    assert_eq!(appliance.tree(), before, "a refused medium changes nothing");

    // A plain package install: the bundle is ignored, and says so.
    let plain = Appliance::new();
    fs::remove_file(medium.path().join("butler-edge.yaml")).unwrap();
    let before = plain.tree();
    let (code, out) = plain.provision(Some(medium.path()));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("updates need the A/B appliance"), "{out}");
    assert_eq!(plain.tree(), before);
}
