//! `butler-edge provision`: applies a provisioning medium (a small FAT or ISO 9660 volume
//! the admin attaches at deploy time) to the appliance, all at once or not at all.
//!
//! Why this shape: an appliance nobody logs in to must take its configuration from the
//! platform, and a bad medium must never leave it half-configured or unreachable. So the
//! medium's files are staged into a new *generation* directory (a copy of the current one with
//! the medium's files laid over it), the staged set is checked with the same code the service
//! runs at start-up (`Config::parse`, the TLS server configuration, the QRS client), and only
//! then does one `rename(2)` of the `site` symlink make the new generation current. A refused
//! medium changes nothing; every problem found is printed (console and journal) naming the
//! medium's file, the key and what was expected.
//!
//! Layout under `/etc/butler-edge`:
//!
//! ```text
//! config.yaml -> site/config.yaml      (the service's --config, unchanged)
//! site -> generations/<id>             (the one atomic switch)
//! generations/<id>/config.yaml         (from butler-edge.yaml on the medium)
//!                  appliance.yaml      (host name, static network, NTP: see `network`)
//!                  qrs/ callers/ tls/  (certificates, keys and CRLs from the medium)
//! pki/                                 (the appliance CA made by `butler-edge init`)
//! ```
//!
//! A config on the medium names its files where they will be: `/etc/butler-edge/site/qrs/…`.
//! The machine settings (`appliance.yaml`) are rendered on every run from the current
//! generation, so a crash between the switch and the rendering converges at the next boot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::medium_update::MEDIUM_BUNDLE;
use super::network::{self, MachineSettings};
use crate::config::Config;

/// Where a provisioned config names its files (the `site` symlink as the service sees it).
pub const SITE_DIR: &str = "/etc/butler-edge/site";
/// The volume label the boot unit looks for (FAT labels are upper case).
pub const MEDIUM_LABEL: &str = "BUTLEREDGE";
/// The Butler config file on the medium.
pub const MEDIUM_CONFIG: &str = "butler-edge.yaml";
/// Where the outcome of the last run is kept for the console (relative to the root).
pub const RECORD_PATH: &str = "var/lib/butler-edge-appliance/provisioning.json";

/// Largest file accepted from a medium: certificates, keys and configs are a few kB.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// The medium's digest, kept in each generation, so an unchanged medium is not re-applied.
const DIGEST_FILE: &str = ".medium-sha256";

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// The mounted provisioning medium; without it only the current generation's machine
    /// settings are (re)applied and "no medium" is recorded.
    #[arg(long, value_name = "DIR")]
    pub medium: Option<PathBuf>,
    /// How the medium is named in messages (e.g. the device it was found on).
    #[arg(long, value_name = "TEXT")]
    pub medium_name: Option<String>,
    /// The medium was found but could not be read (e.g. not mountable): record it as refused
    /// with this reason, and change nothing.
    #[arg(long, value_name = "TEXT", conflicts_with = "medium")]
    pub medium_error: Option<String>,
    /// The root of the file system to provision (tests use a scratch directory).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Also set the running system's host name (the boot unit does; tests do not).
    #[arg(long)]
    pub set_hostname: bool,
}

/// What the last run did, as the console shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// RFC 3339 time of the run.
    pub at: String,
    /// `applied`, `unchanged`, `refused` or `no medium`.
    pub outcome: String,
    pub medium: Option<String>,
    /// The generation now current (unchanged by a refusal).
    pub generation: Option<String>,
    /// The medium's files that were applied.
    #[serde(default)]
    pub files: Vec<String>,
    /// Why the medium was refused, one problem a line.
    #[serde(default)]
    pub problems: Vec<String>,
    /// What became of the medium's update bundle (`update.raucb`), if it has one.
    #[serde(default)]
    pub update: Option<String>,
}

impl Record {
    /// The last run's record under `root`, if there is one.
    pub fn read(root: &Path) -> Option<Record> {
        let text = fs::read_to_string(root.join(RECORD_PATH)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "the provisioning medium was refused; nothing changed, the previous configuration stays"
    )]
    Refused,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The paths one run touches, all under `root`.
struct Paths {
    root: PathBuf,
    etc: PathBuf,
    site: PathBuf,
    generations: PathBuf,
    config: PathBuf,
    pki: PathBuf,
}

impl Paths {
    fn new(root: &Path) -> Paths {
        let etc = root.join("etc/butler-edge");
        Paths {
            root: root.to_path_buf(),
            site: etc.join("site"),
            generations: etc.join("generations"),
            config: etc.join("config.yaml"),
            pki: etc.join("pki"),
            etc,
        }
    }

    /// Where an absolute path named in a config is, for a config staged in `stage`.
    fn relocate(&self, path: &Path, stage: &Path) -> PathBuf {
        match path.strip_prefix(SITE_DIR) {
            Ok(rest) => stage.join(rest),
            Err(_) => self.root.join(path.strip_prefix("/").unwrap_or(path)),
        }
    }
}

/// Runs `butler-edge provision`; prints what it did on stdout, problems on stdout too (the
/// unit sends both to the journal and the console).
pub fn run(args: &ProvisionArgs) -> Result<Record, ProvisionError> {
    let paths = Paths::new(&args.root);
    let medium_name = args
        .medium_name
        .clone()
        .or_else(|| args.medium.as_ref().map(|m| m.display().to_string()));
    let result = match &args.medium {
        None if args.medium_error.is_some() => Err(Refusal::Problems(
            args.medium_error.iter().cloned().collect(),
        )),
        None => Ok(Applied {
            outcome: "no medium",
            files: Vec::new(),
        }),
        Some(medium) => apply_medium(&paths, medium),
    };
    let mut record = Record {
        at: now_rfc3339(),
        outcome: String::new(),
        medium: medium_name.clone(),
        generation: current_generation(&paths),
        files: Vec::new(),
        problems: Vec::new(),
        update: None,
    };
    let outcome = match result {
        Ok(applied) => {
            record.outcome = applied.outcome.to_string();
            record.files = applied.files;
            Ok(())
        }
        Err(Refusal::Problems(problems)) => {
            record.outcome = "refused".to_string();
            record.problems = problems;
            Err(ProvisionError::Refused)
        }
        Err(Refusal::Fatal(e)) => {
            record.outcome = "refused".to_string();
            record.problems = vec![e.to_string()];
            Err(e)
        }
    };
    // The bundle only after the rest of the medium passed its checks.
    if let Some(medium) = &args.medium
        && outcome.is_ok()
        && medium.join(MEDIUM_BUNDLE).is_file()
    {
        let said = super::medium_update::hand_over(&paths.root, medium);
        println!("butler-edge provision: {said}");
        record.update = Some(said);
    }
    let name = medium_name.as_deref().unwrap_or("(none)");
    match record.outcome.as_str() {
        "applied" => println!(
            "butler-edge provision: applied the medium {name} as generation {}: {}",
            record.generation.as_deref().unwrap_or("?"),
            record.files.join(", ")
        ),
        "unchanged" => println!(
            "butler-edge provision: the medium {name} is the one already applied (generation {}); nothing to do",
            record.generation.as_deref().unwrap_or("?")
        ),
        "update only" => println!(
            "butler-edge provision: the medium {name} brings an update bundle and no configuration; the current configuration stays"
        ),
        "no medium" => println!(
            "butler-edge provision: no provisioning medium (a volume labelled {MEDIUM_LABEL}); the current configuration stays"
        ),
        _ => {
            println!(
                "butler-edge provision: REFUSED the medium {name}; nothing changed, the previous configuration stays:"
            );
            for problem in &record.problems {
                println!("  {problem}");
            }
        }
    }
    // The machine settings always follow the current generation (also after a refusal: the
    // previous generation's are re-applied, so nothing drifts).
    render_machine_settings(&paths, args.set_hostname).map_err(|e| {
        println!("butler-edge provision: applying the machine settings failed: {e}");
        e
    })?;
    write_record(&paths, &record)?;
    outcome.map(|()| record)
}

struct Applied {
    outcome: &'static str,
    files: Vec<String>,
}

enum Refusal {
    /// The medium is wrong: each entry names its file, key and what was expected.
    Problems(Vec<String>),
    /// The appliance could not stage or switch (a full disk, say).
    Fatal(ProvisionError),
}

impl From<ProvisionError> for Refusal {
    fn from(e: ProvisionError) -> Self {
        Refusal::Fatal(e)
    }
}

fn apply_medium(paths: &Paths, medium: &Path) -> Result<Applied, Refusal> {
    let files = read_medium(medium)?;
    if files.is_empty() && medium.join(MEDIUM_BUNDLE).is_file() {
        return Ok(Applied {
            outcome: "update only",
            files: Vec::new(),
        });
    }
    if files.is_empty() {
        return Err(Refusal::Problems(vec![format!(
            "the medium holds none of the files butler-edge reads ({}); see the README's \
             \"Provisioning medium\"",
            allowed_files_text()
        )]));
    }
    let digest = digest_of(&files);
    if current_digest(paths).as_deref() == Some(digest.as_str()) {
        return Ok(Applied {
            outcome: "unchanged",
            files: files.keys().cloned().collect(),
        });
    }

    let id = format!("{}-{}", now_compact(), &digest[..8]);
    // Beside the generations (same file system, so the rename below is atomic), and
    // nothing is created under them before the medium has passed every check.
    let stage = paths.etc.join(format!(".staging-{id}"));
    let _ = fs::remove_dir_all(&stage);
    let staged = stage_generation(paths, &stage, &files, &digest);
    let problems = match staged {
        Ok(()) => validate(paths, &stage),
        Err(e) => vec![e.to_string()],
    };
    if !problems.is_empty() {
        let _ = fs::remove_dir_all(&stage);
        return Err(Refusal::Problems(problems));
    }
    fs::create_dir_all(&paths.generations).map_err(io(&paths.generations))?;
    let generation = paths.generations.join(&id);
    fs::rename(&stage, &generation).map_err(io(&generation))?;
    sync_dir(&paths.generations)?;
    switch_site(paths, &id)?;
    prune_generations(paths, &id);
    Ok(Applied {
        outcome: "applied",
        files: files.keys().cloned().collect(),
    })
}

/// The medium's files butler-edge reads, by their name in a generation (`butler-edge.yaml`
/// becomes `config.yaml`), with their contents. Unknown files are refused: a misspelt
/// `client-key.pem` must not be ignored in silence.
fn read_medium(medium: &Path) -> Result<BTreeMap<String, Vec<u8>>, Refusal> {
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    let top = fs::read_dir(medium).map_err(io(medium))?;
    for entry in top {
        let entry = entry.map_err(io(medium))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ignored(&name) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            if !matches!(name.as_str(), "qrs" | "callers" | "tls") {
                problems.push(format!(
                    "{name}/: unexpected directory on the medium; expected only {}",
                    allowed_files_text()
                ));
                continue;
            }
            for inner in fs::read_dir(&path).map_err(io(&path))? {
                let inner = inner.map_err(io(&path))?;
                let inner_name = inner.file_name().to_string_lossy().into_owned();
                if ignored(&inner_name) {
                    continue;
                }
                let rel = format!("{name}/{inner_name}");
                if allowed_in(&name, &inner_name) && inner.path().is_file() {
                    read_one(&inner.path(), &rel, &rel, &mut files, &mut problems);
                } else {
                    problems.push(format!(
                        "{rel}: unexpected file on the medium; expected {}",
                        allowed_in_text(&name)
                    ));
                }
            }
        } else if name == MEDIUM_CONFIG {
            read_one(&path, &name, "config.yaml", &mut files, &mut problems);
        } else if name == network::FILE {
            read_one(&path, &name, network::FILE, &mut files, &mut problems);
        } else if name == MEDIUM_BUNDLE && path.is_file() {
            // Not configuration: handed to the installer by `medium_update` afterwards.
        } else {
            problems.push(format!(
                "{name}: unexpected file on the medium; expected only {}",
                allowed_files_text()
            ));
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(Refusal::Problems(problems))
    }
}

fn read_one(
    path: &Path,
    shown: &str,
    stored: &str,
    files: &mut BTreeMap<String, Vec<u8>>,
    problems: &mut Vec<String>,
) {
    match fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => problems.push(format!(
            "{shown}: {} bytes; expected at most {MAX_FILE_BYTES} (certificates, keys and configs are a few kB)",
            meta.len()
        )),
        Ok(_) => match fs::read(path) {
            Ok(data) => {
                files.insert(stored.to_string(), data);
            }
            Err(e) => problems.push(format!("{shown}: cannot be read from the medium: {e}")),
        },
        Err(e) => problems.push(format!("{shown}: cannot be read from the medium: {e}")),
    }
}

/// What tools and operating systems leave on a volume, never ours.
fn ignored(name: &str) -> bool {
    name.starts_with('.')
        || matches!(
            name,
            "System Volume Information" | "$RECYCLE.BIN" | "lost+found" | "autorun.inf"
        )
        || name.to_ascii_lowercase().ends_with(".txt")
        || name.to_ascii_lowercase().ends_with(".md")
}

fn allowed_in(dir: &str, name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match dir {
        "qrs" => matches!(name, "client.pem" | "client_key.pem" | "root.pem"),
        "callers" => matches!(ext, "pem" | "crt" | "crl"),
        "tls" => matches!(ext, "pem" | "crt" | "key"),
        _ => false,
    }
}

fn allowed_in_text(dir: &str) -> &'static str {
    match dir {
        "qrs" => {
            "qrs/client.pem, qrs/client_key.pem or qrs/root.pem (Sense's exported certificates)"
        }
        "callers" => "callers/*.pem, *.crt (callers' CA certificates) or *.crl",
        _ => "tls/*.pem, *.crt or *.key (the server certificate and key)",
    }
}

fn allowed_files_text() -> String {
    format!(
        "{MEDIUM_CONFIG}, {}, {MEDIUM_BUNDLE} (an update bundle), qrs/ (client.pem, client_key.pem, root.pem), callers/ (*.pem, *.crt, *.crl), tls/ (*.pem, *.crt, *.key)",
        network::FILE
    )
}

/// SHA-256 over the files' names and contents, in name order.
fn digest_of(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, data) in files {
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(&(data.len() as u64).to_be_bytes());
        ctx.update(data);
    }
    let mut out = String::new();
    for byte in ctx.finish().as_ref() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn current_digest(paths: &Paths) -> Option<String> {
    fs::read_to_string(paths.site.join(DIGEST_FILE))
        .ok()
        .map(|s| s.trim().to_string())
}

fn current_generation(paths: &Paths) -> Option<String> {
    let target = fs::read_link(&paths.site).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The new generation: the current one's files (or, before the first provisioning, the
/// image's plain config.yaml), then the medium's over them.
fn stage_generation(
    paths: &Paths,
    stage: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    digest: &str,
) -> Result<(), ProvisionError> {
    let gid = crate::init::service_group();
    make_dir(stage, gid)?;
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if paths.site.is_dir() {
        collect(&paths.site, "", &mut contents)?;
    } else if paths.config.is_file() {
        contents.insert(
            "config.yaml".into(),
            fs::read(&paths.config).map_err(io(&paths.config))?,
        );
    }
    contents.remove(DIGEST_FILE);
    contents.extend(files.iter().map(|(k, v)| (k.clone(), v.clone())));
    contents.insert(DIGEST_FILE.into(), format!("{digest}\n").into_bytes());
    for (name, data) in &contents {
        let path = stage.join(name);
        if let Some(parent) = path.parent()
            && parent != stage
        {
            make_dir(parent, gid)?;
        }
        // Readable by the service's group only: keys, and configs that may hold secrets.
        crate::init::write_file(&path, data, 0o640, gid)
            .map_err(|e| ProvisionError::Other(e.to_string()))?;
    }
    Ok(())
}

fn make_dir(path: &Path, gid: Option<u32>) -> Result<(), ProvisionError> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path)(e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o750)).map_err(io(path))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| ProvisionError::Other(format!("{}: chown: {e}", path.display())))?;
    }
    Ok(())
}

fn collect(
    dir: &Path,
    prefix: &str,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), ProvisionError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            collect(&path, &format!("{name}/"), out)?;
        } else {
            out.insert(name, fs::read(&path).map_err(io(&path))?);
        }
    }
    Ok(())
}

/// Every problem of the staged generation, checked by the code the service itself runs.
///
/// In steps: the machine settings, then the Butler config (without one nothing else can be
/// checked), then the TLS files it names, then the QRS client it would build.
fn validate(paths: &Paths, stage: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(machine_settings_problem(stage));
    let config = match staged_config(paths, stage) {
        Ok(config) => config,
        Err(problem) => {
            problems.push(problem);
            return problems;
        }
    };
    let mut found = tls_problems(paths, &config);
    if config.features.start_task == crate::config::StartTaskMode::Ready
        && let Err(e) = crate::qrs::QrsClient::new(&config.start_task.qrs)
    {
        found.push(e.to_string());
    }
    // Messages name files where the service will see them, not the staging directory.
    let stage_text = stage.display().to_string();
    let root_text = paths.root.display().to_string();
    problems.extend(found.into_iter().map(|e| {
        let message = format!("{MEDIUM_CONFIG}: {e}").replace(&stage_text, SITE_DIR);
        if root_text == "/" {
            message
        } else {
            message.replace(&root_text, "")
        }
    }));
    problems
}

/// What is wrong with `appliance.yaml`, if the medium brings one.
fn machine_settings_problem(stage: &Path) -> Option<String> {
    match fs::read_to_string(stage.join(network::FILE)) {
        Ok(text) => MachineSettings::parse(&text)
            .err()
            .map(|e| format!("{}: {e}", network::FILE)),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => Some(format!("{}: cannot be read: {e}", network::FILE)),
    }
}

/// The staged Butler config, parsed and pointed at the staged files; or the one problem
/// that stops the rest of the checks.
fn staged_config(paths: &Paths, stage: &Path) -> Result<Config, String> {
    let text = fs::read_to_string(stage.join("config.yaml")).map_err(|e| {
        format!("{MEDIUM_CONFIG}: no Butler config to run ({e}); put one on the medium")
    })?;
    let mut config =
        Config::parse(&text, MEDIUM_CONFIG).map_err(|e| format!("{MEDIUM_CONFIG}: {e}"))?;
    relocate_config(paths, &mut config, stage);
    Ok(config)
}

/// The TLS files' problems, as the service would report them when it starts.
fn tls_problems(paths: &Paths, config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let tls = &config.rest.tls;
    if !(config.rest.enable && tls.enable) {
        return problems;
    }
    // The appliance's own server certificate is made by `butler-edge init` after the
    // network is up, so on the first boot it does not exist yet: then check what the
    // medium brings (callers' CAs and CRLs) on their own.
    let pending_pki = !paths.pki.join("ca.crt").exists()
        && [&tls.cert, &tls.key]
            .iter()
            .all(|p| p.starts_with(&paths.pki));
    if !pending_pki {
        if let Err(e) = crate::security::tls::server_config(tls, &config.client_auth) {
            problems.push(e.to_string());
        }
        return problems;
    }
    if config.client_auth.enable {
        for ca in &config.client_auth.ca {
            if !ca.starts_with(&paths.pki)
                && let Err(e) = crate::security::tls::read_certs("ButlerEdge.clientAuth.ca", ca)
            {
                problems.push(e.to_string());
            }
        }
        for crl in &config.client_auth.crl {
            if let Err(e) = crate::security::tls::read_crls("ButlerEdge.clientAuth.crl", crl) {
                problems.push(e.to_string());
            }
        }
    }
    problems
}

/// Points every file a config names at where it is while staged.
fn relocate_config(paths: &Paths, config: &mut Config, stage: &Path) {
    let tls = &mut config.rest.tls;
    tls.cert = paths.relocate(&tls.cert, stage);
    tls.key = paths.relocate(&tls.key, stage);
    if let Some(ca) = &mut tls.ca {
        *ca = paths.relocate(ca, stage);
    }
    for ca in &mut config.client_auth.ca {
        *ca = paths.relocate(ca, stage);
    }
    for crl in &mut config.client_auth.crl {
        *crl = paths.relocate(crl, stage);
    }
    let qrs = &mut config.start_task.qrs;
    qrs.client_cert = paths.relocate(&qrs.client_cert, stage);
    qrs.client_key = paths.relocate(&qrs.client_key, stage);
    qrs.root_ca = paths.relocate(&qrs.root_ca, stage);
}

/// The commit point: `site` is re-pointed by renaming a new symlink over it, and
/// `config.yaml` is made the symlink into `site` if it is not yet.
fn switch_site(paths: &Paths, id: &str) -> Result<(), ProvisionError> {
    replace_with_symlink(&paths.site, Path::new("generations").join(id).as_path())?;
    let wanted = Path::new("site/config.yaml");
    if fs::read_link(&paths.config).ok().as_deref() != Some(wanted) {
        replace_with_symlink(&paths.config, wanted)?;
    }
    sync_dir(&paths.etc)
}

fn replace_with_symlink(link: &Path, target: &Path) -> Result<(), ProvisionError> {
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io(&tmp))?;
    fs::rename(&tmp, link).map_err(io(link))
}

/// Keeps the current generation and the one before it (to go back to by hand).
fn prune_generations(paths: &Paths, current: &str) {
    let Ok(entries) = fs::read_dir(&paths.generations) else {
        return;
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    let keep_from = ids
        .iter()
        .position(|id| id == current)
        .unwrap_or(ids.len())
        .saturating_sub(1);
    for id in ids.iter().take(keep_from) {
        let _ = fs::remove_dir_all(paths.generations.join(id));
    }
}

/// Writes (or removes) the networkd, timesyncd and host-name files for the current
/// generation's `appliance.yaml`.
fn render_machine_settings(paths: &Paths, set_hostname: bool) -> Result<(), ProvisionError> {
    let settings = match fs::read_to_string(paths.site.join(network::FILE)) {
        Ok(text) => MachineSettings::parse(&text)
            .map_err(|e| ProvisionError::Other(format!("{}: {e}", network::FILE)))?,
        Err(_) => MachineSettings::default(),
    };
    let root = &paths.root;
    put_or_remove(
        &root.join("etc/systemd/network/10-butler-edge-static.network"),
        settings.networkd_file(),
    )?;
    put_or_remove(
        &root.join("etc/systemd/timesyncd.conf.d/50-butler-edge.conf"),
        settings.timesyncd_file(),
    )?;
    if let Some(name) = &settings.hostname {
        put_or_remove(&root.join("etc/hostname"), Some(format!("{name}\n")))?;
        let hosts = root.join("etc/hosts");
        let old = fs::read_to_string(&hosts).unwrap_or_default();
        let mut new: String = old
            .lines()
            .filter(|l| !l.starts_with("127.0.1.1"))
            .map(|l| format!("{l}\n"))
            .collect();
        new.push_str(&format!("127.0.1.1\t{name}\n"));
        if new != old {
            put_or_remove(&hosts, Some(new))?;
        }
        if set_hostname {
            nix::unistd::sethostname(name)
                .map_err(|e| ProvisionError::Other(format!("sethostname({name}): {e}")))?;
        }
    }
    Ok(())
}

fn put_or_remove(path: &Path, contents: Option<String>) -> Result<(), ProvisionError> {
    match contents {
        None => match fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io(path)(e)),
            _ => Ok(()),
        },
        Some(text) => {
            if fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
                return Ok(());
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            crate::init::write_file(path, text.as_bytes(), 0o644, None)
                .map_err(|e| ProvisionError::Other(e.to_string()))
        }
    }
}

fn write_record(paths: &Paths, record: &Record) -> Result<(), ProvisionError> {
    let text =
        serde_json::to_string_pretty(record).map_err(|e| ProvisionError::Other(e.to_string()))?;
    put_or_remove(&paths.root.join(RECORD_PATH), Some(text + "\n"))
}

fn sync_dir(dir: &Path) -> Result<(), ProvisionError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `20261201T203000Z`: generation ids sort by time.
fn now_compact() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}
