//! A real RAUC (Debian's `rauc` 1.8) on this machine, for the update tests: a private D-Bus
//! session bus, `rauc service` on it with a system config whose two slots (A booted, B the
//! other) are plain files (`type=raw`) and whose boot loader is RAUC's GRUB backend on a
//! grubenv file, a signing CA in the keyring and another one outside it, and bundles built
//! with `rauc bundle` (plain format: the verity format needs device-mapper).
//!
//! Needs the Debian packages rauc, squashfs-tools (mksquashfs, for `rauc bundle`),
//! grub-common (grub-editenv), dbus (dbus-daemon) and openssl, and root (RAUC's service
//! loop-mounts bundles). Without them `Rig::new` returns None after `support::skip`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub system_conf: PathBuf,
    bus_address: String,
    bus: Child,
    service: Child,
}

/// Who signs a bundle.
#[derive(Clone, Copy)]
pub enum Signer {
    /// The keyring's own certificate.
    Trusted,
    /// A certificate the keyring does not know.
    Stranger,
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(command: &mut Command) {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Rig {
    /// Starts the bus and RAUC's service, booted from slot A; None (after a loud skip) when
    /// the tools are missing.
    pub fn new(test: &str) -> Option<Rig> {
        let missing: Vec<&str> = [
            "rauc",
            "mksquashfs",
            "grub-editenv",
            "dbus-daemon",
            "openssl",
        ]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
        if !missing.is_empty() || !nix::unistd::geteuid().is_root() {
            super::skip(
                test,
                &format!(
                    "needs root and {missing:?} (apt-get install rauc squashfs-tools grub-common \
                     dbus openssl)"
                ),
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (stem, cn) in [
            ("trusted", "butler-edge test vendor"),
            ("stranger", "someone else"),
        ] {
            run(Command::new("openssl").args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &d.join(format!("{stem}.key")).display().to_string(),
                "-out",
                &d.join(format!("{stem}.pem")).display().to_string(),
            ]));
        }
        std::fs::write(d.join("slot-a.img"), b"slot A, running").unwrap();
        std::fs::write(d.join("slot-b.img"), b"slot B, old").unwrap();
        std::fs::create_dir(d.join("rauc-data")).unwrap();
        run(Command::new("grub-editenv")
            .arg(d.join("grubenv"))
            .arg("create"));
        run(Command::new("grub-editenv").arg(d.join("grubenv")).args([
            "set",
            "ORDER=A B",
            "A_OK=1",
            "B_OK=1",
            "A_TRY=0",
            "B_TRY=0",
        ]));
        let system_conf = d.join("system.conf");
        std::fs::write(
            &system_conf,
            format!(
                "[system]\ncompatible=butler-edge\nbootloader=grub\ngrubenv={d}/grubenv\n\
                 data-directory={d}/rauc-data\n\n[keyring]\npath={d}/trusted.pem\n\n\
                 [slot.rootfs.0]\ndevice={d}/slot-a.img\ntype=raw\nbootname=A\n\n\
                 [slot.rootfs.1]\ndevice={d}/slot-b.img\ntype=raw\nbootname=B\n",
                d = d.display()
            ),
        )
        .unwrap();
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let bus_address = {
            use std::io::BufRead as _;
            let mut line = String::new();
            std::io::BufReader::new(bus.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            line.trim().to_string()
        };
        let service = start_service(&system_conf, &bus_address, "A");
        let rig = Rig {
            dir,
            system_conf,
            bus_address,
            bus,
            service,
        };
        rig.wait_for_service();
        Some(rig)
    }

    fn wait_for_service(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.rauc(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "rauc service did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// "Boots" slot `bootname`: RAUC's service restarted as if the kernel command line said
    /// `rauc.slot=BOOTNAME` (what GRUB would have chosen is the test's to decide).
    pub fn boot(&mut self, bootname: &str) {
        let _ = self.service.kill();
        let _ = self.service.wait();
        self.service = start_service(&self.system_conf, &self.bus_address, bootname);
        self.wait_for_service();
    }

    /// `butler-edge confirm-boot` against this rig, with a timeout of `timeout_s`; its exit
    /// status and output. (There is no systemd here, so butler-edge.service is never seen
    /// active: the healthy path is image/update-test's.)
    pub fn confirm_boot(&self, update_dir: &Path, timeout_s: u64) -> (bool, String) {
        let health = self.dir.path().join("health.json");
        let timeout = timeout_s.to_string();
        self.run_updater(
            "confirm-boot",
            update_dir,
            &[
                "--health".as_ref(),
                health.as_os_str(),
                "--timeout-seconds".as_ref(),
                timeout.as_ref(),
            ],
        )
    }

    /// `butler-edge SUBCOMMAND` with this rig's update files, RAUC and no real reboot, plus
    /// `extra` arguments; its exit status and output.
    fn run_updater(
        &self,
        subcommand: &str,
        update_dir: &Path,
        extra: &[&std::ffi::OsStr],
    ) -> (bool, String) {
        let output = Command::new(super::server::BIN)
            .arg(subcommand)
            .arg("--update-dir")
            .arg(update_dir)
            .arg("--rauc-conf")
            .arg(&self.system_conf)
            .arg("--slots-file")
            .arg(self.slots_file())
            .arg("--os-release")
            .arg(self.os_release())
            .args(["--reboot-command", "true"])
            .args(extra)
            .envs(self.env())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// The environment that points `rauc` at this rig's bus.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("DBUS_STARTER_BUS_TYPE", "session".to_string()),
            ("DBUS_SESSION_BUS_ADDRESS", self.bus_address.clone()),
        ]
    }

    /// Runs `rauc --conf=… ARGS` against this rig.
    pub fn rauc(&self, args: &[&str]) -> std::process::Output {
        Command::new("rauc")
            .arg(format!("--conf={}", self.system_conf.display()))
            .args(args)
            .envs(self.env())
            .output()
            .expect("rauc")
    }

    /// A bundle of `image` for `compatible`, version `version`, signed by `signer`.
    pub fn bundle(
        &self,
        name: &str,
        version: &str,
        compatible: &str,
        signer: Signer,
        image: &[u8],
    ) -> PathBuf {
        let content = self.dir.path().join(format!("content-{name}"));
        std::fs::create_dir(&content).unwrap();
        std::fs::write(content.join("rootfs.img"), image).unwrap();
        std::fs::write(
            content.join("manifest.raucm"),
            format!(
                "[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat=plain\n\n\
                 [image.rootfs]\nfilename=rootfs.img\n"
            ),
        )
        .unwrap();
        let stem = match signer {
            Signer::Trusted => "trusted",
            Signer::Stranger => "stranger",
        };
        let d = self.dir.path();
        let out = d.join(format!("{name}.raucb"));
        run(Command::new("rauc")
            .arg(format!(
                "--cert={}",
                d.join(format!("{stem}.pem")).display()
            ))
            .arg(format!("--key={}", d.join(format!("{stem}.key")).display()))
            .arg("bundle")
            .arg(&content)
            .arg(&out));
        out
    }

    /// The GRUB environment RAUC keeps (`ORDER=…`, `B_OK=…`).
    pub fn grubenv(&self) -> String {
        let output = Command::new("grub-editenv")
            .arg(self.dir.path().join("grubenv"))
            .arg("list")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn slot_b(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("slot-b.img")).unwrap()
    }

    /// `butler-edge install-update` for the update directory `update_dir`, with this rig's
    /// RAUC and no real reboot; its exit status and output.
    pub fn install_update(&self, update_dir: &Path) -> (bool, String) {
        self.run_updater("install-update", update_dir, &[])
    }

    /// An os-release for the running slot (version 1.0.0).
    pub fn os_release(&self) -> PathBuf {
        let path = self.dir.path().join("os-release");
        if !path.exists() {
            std::fs::write(
                &path,
                "ID=debian\nIMAGE_ID=butler-edge\nIMAGE_VERSION=1.0.0\n",
            )
            .unwrap();
        }
        path
    }

    pub fn slots_file(&self) -> PathBuf {
        self.dir.path().join("slots.json")
    }
}

fn start_service(system_conf: &Path, bus_address: &str, bootname: &str) -> Child {
    Command::new("rauc")
        .arg(format!("--conf={}", system_conf.display()))
        .arg("service")
        .arg(format!("--override-boot-slot={bootname}"))
        .env("DBUS_STARTER_BUS_TYPE", "session")
        .env("DBUS_SESSION_BUS_ADDRESS", bus_address)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rauc service")
}

impl Drop for Rig {
    fn drop(&mut self) {
        for child in [&mut self.service, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
