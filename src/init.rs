//! `butler-edge init`: first-boot provisioning of the appliance's PKI.
//!
//! An appliance must be secure before anyone has configured it, so on first boot (the
//! `butler-edge-init.service` oneshot) this creates, in `/etc/butler-edge/pki`:
//!
//! - `ca.crt`, `ca.key` — the appliance CA: it signs the server certificate and the callers'
//!   client certificates (`ButlerEdge.clientAuth.ca` trusts it). Its key stays root-only.
//! - `server.crt`, `server.key` — the HTTPS certificate for this machine's hostname and
//!   addresses (`Butler.restServerConfig.tls`), the key readable by the service's group.
//! - `admin/admin.crt`, `admin/admin.key`, `admin/ca.crt` — the first caller's client bundle,
//!   for the admin to copy off the box and use with curl.
//!
//! It prints the CA's SHA-256 fingerprint (compare it with
//! `openssl x509 -noout -fingerprint -sha256 -in ca.crt` on the copied bundle) and where the
//! bundle is. It never replaces an existing PKI: once `ca.crt` exists, running it again only
//! reports. Files are written to a temporary name, synced and renamed, `ca.crt` last, so an
//! interrupted run leaves no `ca.crt` and the next run starts over cleanly.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Where the appliance keeps its PKI (beside config.yaml, in the unit's ConfigurationDirectory).
pub const DEFAULT_PKI_DIR: &str = "/etc/butler-edge/pki";
/// The system group the service runs as (systemd/butler-edge.sysusers); it may read server.key.
pub const SERVICE_GROUP: &str = "butler-edge";

const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 825;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory for the appliance PKI.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PKI_DIR)]
    pub pki_dir: PathBuf,
    /// DNS name for the server certificate (repeatable). Default: this machine's hostname
    /// and `localhost`.
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostnames: Vec<String>,
    /// IP address for the server certificate (repeatable). Default: this machine's addresses
    /// (link-local IPv6 excluded) and the loopback addresses.
    #[arg(long = "address", value_name = "IP")]
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating the {what} certificate: {source}")]
    Certificate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error(
        "{dir} holds ca.crt but not {missing}: the PKI is incomplete. Restore the missing files, or move {dir} aside and run `butler-edge init` again to create a new PKI (callers must then get new certificates)"
    )]
    Incomplete { dir: PathBuf, missing: String },
    #[error("{path}: not a PEM certificate ({reason})")]
    NotPem { path: PathBuf, reason: String },
    #[error("invalid DNS name for the server certificate: {name:?} ({reason})")]
    BadName { name: String, reason: String },
    #[error("giving {path} to group {group} (gid {gid}): {source}")]
    Chown {
        path: PathBuf,
        group: &'static str,
        gid: u32,
        source: nix::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of a complete PKI, relative to the PKI directory (ca.crt is the marker and is
/// written last).
const FILES: [&str; 6] = [
    "ca.key",
    "server.crt",
    "server.key",
    "admin/admin.crt",
    "admin/admin.key",
    "admin/ca.crt",
];

/// Runs `butler-edge init`; prints what it did (or found) on stdout.
pub fn run(args: &InitArgs) -> Result<(), InitError> {
    let dir = &args.pki_dir;
    let ca_path = dir.join("ca.crt");
    if ca_path.exists() {
        return report_existing(dir, &ca_path);
    }

    let names = if args.hostnames.is_empty() {
        default_hostnames()
    } else {
        args.hostnames.clone()
    };
    let addresses = if args.addresses.is_empty() {
        default_addresses()
    } else {
        args.addresses.clone()
    };
    let pki = generate(&names, &addresses)?;
    write_pki(dir, &pki)?;
    println!(
        "butler-edge init: created the appliance PKI in {}.",
        dir.display()
    );
    let mut sans: Vec<String> = names.clone();
    sans.extend(addresses.iter().map(IpAddr::to_string));
    print_summary(dir, &pki.ca_fingerprint, Some(&sans));
    Ok(())
}

/// A directory provisioned before: complete (say so, change nothing) or not (refuse).
fn report_existing(dir: &Path, ca_path: &Path) -> Result<(), InitError> {
    let missing: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).exists())
        .collect();
    if !missing.is_empty() {
        return Err(InitError::Incomplete {
            dir: dir.to_path_buf(),
            missing: missing.join(", "),
        });
    }
    let fingerprint = fingerprint_of_pem_file(ca_path)?;
    println!(
        "butler-edge init: {} already holds the appliance PKI; nothing changed.",
        dir.display()
    );
    print_summary(dir, &fingerprint, None);
    Ok(())
}

/// Writes the files with their modes, `ca.crt` last (its presence means "provisioned").
fn write_pki(dir: &Path, pki: &Pki) -> Result<(), InitError> {
    let ca_path = dir.join("ca.crt");
    let group = service_group();
    create_dir(dir, 0o750, group)?;
    create_dir(&dir.join("admin"), 0o700, None)?;
    write_file(&dir.join("ca.key"), pki.ca_key.as_bytes(), 0o600, None)?;
    write_file(
        &dir.join("server.crt"),
        pki.server_cert.as_bytes(),
        0o644,
        group,
    )?;
    write_file(
        &dir.join("server.key"),
        pki.server_key.as_bytes(),
        0o640,
        group,
    )?;
    write_file(
        &dir.join("admin/admin.crt"),
        pki.admin_cert.as_bytes(),
        0o644,
        None,
    )?;
    write_file(
        &dir.join("admin/admin.key"),
        pki.admin_key.as_bytes(),
        0o600,
        None,
    )?;
    write_file(
        &dir.join("admin/ca.crt"),
        pki.ca_cert.as_bytes(),
        0o644,
        None,
    )?;
    // Last: its presence means "provisioned".
    write_file(&ca_path, pki.ca_cert.as_bytes(), 0o644, group)?;
    sync_dir(dir)
}

fn print_summary(dir: &Path, fingerprint: &str, sans: Option<&[String]>) {
    println!("  CA certificate:      {}", dir.join("ca.crt").display());
    println!("  CA fingerprint:      sha256 Fingerprint={fingerprint}");
    match sans {
        Some(sans) => println!(
            "  server certificate:  {} for {}",
            dir.join("server.crt").display(),
            sans.join(", ")
        ),
        None => println!(
            "  server certificate:  {}",
            dir.join("server.crt").display()
        ),
    }
    println!(
        "  admin client bundle: {} (admin.crt, admin.key, ca.crt)",
        dir.join("admin").display()
    );
    println!(
        "  On the appliance, the console shows a one-time code that hands this bundle out over\n  HTTPS (port 8444); elsewhere, copy it off this machine. Check the CA fingerprint with\n  `openssl x509 -noout -fingerprint -sha256 -in ca.crt`, then:\n  curl --cacert ca.crt --cert admin.crt --key admin.key https://<this machine>:8443/v4/butlerping"
    );
}

/// The generated PKI, PEM-encoded.
struct Pki {
    ca_cert: String,
    ca_key: String,
    ca_fingerprint: String,
    server_cert: String,
    server_key: String,
    admin_cert: String,
    admin_key: String,
}

fn generate(names: &[String], addresses: &[IpAddr]) -> Result<Pki, InitError> {
    let now = OffsetDateTime::now_utc();
    // A little slack for a clock that is behind the one that checks the certificate.
    let not_before = now - Duration::hours(1);
    let host = names.first().map(String::as_str).unwrap_or("butler-edge");

    let cert_err = |what| move |source| InitError::Certificate { what, source };

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn(&format!("butler-edge appliance CA ({host})"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = now + Duration::days(CA_DAYS);
    let ca_key = KeyPair::generate().map_err(cert_err("CA"))?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err("CA"))?;
    let ca_fingerprint = sha256_fingerprint(ca_cert.der());
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut server_params = CertificateParams::default();
    server_params.distinguished_name = dn(host);
    for name in names {
        if !is_dns_name(name) {
            return Err(InitError::BadName {
                name: name.clone(),
                reason: "expected letters, digits and hyphens in dot-separated labels of 1-63 characters".into(),
            });
        }
        let dns = name
            .clone()
            .try_into()
            .map_err(|source: rcgen::Error| InitError::BadName {
                name: name.clone(),
                reason: source.to_string(),
            })?;
        server_params.subject_alt_names.push(SanType::DnsName(dns));
    }
    for address in addresses {
        server_params
            .subject_alt_names
            .push(SanType::IpAddress(*address));
    }
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    server_params.not_before = not_before;
    server_params.not_after = now + Duration::days(LEAF_DAYS);
    let server_key = KeyPair::generate().map_err(cert_err("server"))?;
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(cert_err("server"))?;

    let mut admin_params = CertificateParams::default();
    admin_params.distinguished_name = dn("admin");
    admin_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin_params.use_authority_key_identifier_extension = true;
    admin_params.not_before = not_before;
    admin_params.not_after = now + Duration::days(LEAF_DAYS);
    let admin_key = KeyPair::generate().map_err(cert_err("admin client"))?;
    let admin_cert = admin_params
        .signed_by(&admin_key, &issuer)
        .map_err(cert_err("admin client"))?;

    Ok(Pki {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        ca_fingerprint,
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
    })
}

/// A host name as RFC 1123 allows it (what a TLS client will match against).
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "butler-edge appliance");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// `AB:CD:…`, as `openssl x509 -fingerprint -sha256` prints it.
fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(95);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

pub(crate) fn fingerprint_of_pem_file(path: &Path) -> Result<String, InitError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| InitError::NotPem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if pem.label != "CERTIFICATE" {
        return Err(InitError::NotPem {
            path: path.to_path_buf(),
            reason: format!("found a PEM block labelled {:?}", pem.label),
        });
    }
    Ok(sha256_fingerprint(&pem.contents))
}

/// This machine's hostname and `localhost`.
fn default_hostnames() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(name) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() && name != "localhost" && name != "(none)" {
            names.push(name.to_string());
        }
    }
    names.push("localhost".to_string());
    names
}

/// The addresses of this machine's interfaces, without IPv6 link-local ones (a certificate
/// cannot name their scope), loopback last.
pub(crate) fn default_addresses() -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
        for interface in interfaces {
            let Some(address) = interface.address else {
                continue;
            };
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            let link_local_v6 =
                matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if !ip.is_loopback() && !link_local_v6 && !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
    }
    addresses.push(IpAddr::from([127, 0, 0, 1]));
    addresses.push(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    addresses
}

/// The service's group, when this machine has it (the appliance does; a developer's machine
/// usually does not, and then files keep the caller's group).
pub(crate) fn service_group() -> Option<u32> {
    nix::unistd::Group::from_name(SERVICE_GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

fn give_to_group(path: &Path, gid: Option<u32>) -> Result<(), InitError> {
    let Some(gid) = gid else { return Ok(()) };
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|source| {
        InitError::Chown {
            path: path.to_path_buf(),
            group: SERVICE_GROUP,
            gid,
            source,
        }
    })
}

fn create_dir(path: &Path, mode: u32, gid: Option<u32>) -> Result<(), InitError> {
    fs::create_dir_all(path).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
    give_to_group(path, gid)
}

/// Writes `contents` to a temporary file beside `path`, sets mode and group, syncs it and
/// renames it into place, so `path` is either absent or complete.
pub(crate) fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    gid: Option<u32>,
) -> Result<(), InitError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    give_to_group(&tmp, gid)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), InitError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}
