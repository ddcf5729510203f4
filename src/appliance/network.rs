//! The machine settings a provisioning medium may carry in `appliance.yaml` — host name,
//! static address, DNS and NTP servers — parsed with the same key-path errors as the Butler
//! config, and rendered as the systemd-networkd, systemd-timesyncd and host-name files that
//! the appliance's own services read.
//!
//! ```yaml
//! hostname: edge1
//! network:                      # without it: DHCP (the default)
//!   address: 192.168.10.20/24   # IPv4 or IPv6, with its prefix length
//!   gateway: 192.168.10.1
//!   dns: [192.168.10.2, 192.168.10.3]
//! ntp: [ntp1.example.com, 192.168.10.2]   # without it: the servers DHCP offers
//! ```

use std::net::IpAddr;

use serde_json::Value;

use crate::config::{ConfigError, Reader, describe};

/// The file name on the medium (and in the provisioned site directory).
pub const FILE: &str = "appliance.yaml";

/// What `appliance.yaml` says; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineSettings {
    pub hostname: Option<String>,
    pub network: Option<StaticNetwork>,
    pub ntp: Vec<String>,
}

/// A static IPv4 or IPv6 setting for the wired interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNetwork {
    pub address: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

impl MachineSettings {
    /// Parses `appliance.yaml`. Unknown keys are refused (a misspelt `gatway:` would otherwise
    /// leave the appliance without a route, silently).
    ///
    /// Each part has its own step, checked in the order the file lists them, so the first
    /// error an operator sees is the first one in the file; the unknown-key check comes last
    /// because it needs to know what the steps read.
    pub fn parse(text: &str) -> Result<MachineSettings, ConfigError> {
        if text.trim().is_empty() {
            return Ok(MachineSettings::default());
        }
        let doc = document(text)?;
        let r = Reader::new(&doc);
        let hostname = hostname(&r)?;
        let network = static_network(&doc, &r)?;
        let ntp = ntp_servers(&r)?;
        refuse_unknown_keys(&r)?;
        Ok(MachineSettings {
            hostname,
            network,
            ntp,
        })
    }

    /// The systemd-networkd file for the static setting (`None`: DHCP, the image's default).
    pub fn networkd_file(&self) -> Option<String> {
        let net = self.network.as_ref()?;
        let mut out = String::from(
            "# Written by butler-edge provision from appliance.yaml on the provisioning medium.\n\
             # It sorts before the image's 80-dhcp.network, so it wins for the wired interfaces.\n\
             [Match]\nName=en* eth*\n\n[Network]\nDHCP=no\n",
        );
        out.push_str(&format!("Address={}/{}\n", net.address, net.prefix));
        if let Some(gateway) = net.gateway {
            out.push_str(&format!("Gateway={gateway}\n"));
        }
        for dns in &net.dns {
            out.push_str(&format!("DNS={dns}\n"));
        }
        Some(out)
    }

    /// The systemd-timesyncd drop-in naming the medium's NTP servers (`None`: DHCP's).
    pub fn timesyncd_file(&self) -> Option<String> {
        if self.ntp.is_empty() {
            return None;
        }
        Some(format!(
            "# Written by butler-edge provision from appliance.yaml on the provisioning medium.\n\
             [Time]\nNTP={}\n",
            self.ntp.join(" ")
        ))
    }
}

/// The YAML document as a mapping (an empty document is an empty mapping).
fn document(text: &str) -> Result<Value, ConfigError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
        path: FILE.to_string(),
        message: e.to_string(),
    })?;
    match doc {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(doc),
        other => Err(ConfigError::invalid(
            "(top level)",
            "a mapping with hostname, network and ntp keys",
            &other,
        )),
    }
}

/// `hostname:`, if given, checked to be a valid host name.
fn hostname(r: &Reader<'_>) -> Result<Option<String>, ConfigError> {
    match r.string("hostname")? {
        Some(name) if is_hostname(&name) => Ok(Some(name)),
        Some(name) => Err(ConfigError::invalid(
            "hostname",
            "a host name of letters, digits and hyphens (1-63 characters, not starting \
             or ending with a hyphen)",
            &Value::String(name),
        )),
        None => Ok(None),
    }
}

/// `network:`, the static setting; absent or empty means DHCP.
fn static_network(doc: &Value, r: &Reader<'_>) -> Result<Option<StaticNetwork>, ConfigError> {
    // Looked at directly, not through the reader, which would count the whole section
    // as read and hide a misspelt key inside it.
    match doc.get("network") {
        None => Ok(None),
        Some(Value::Null) => {
            r.get("network");
            Ok(None)
        }
        Some(Value::Object(_)) => {
            let address_text = r.string("network.address")?.ok_or(ConfigError::Invalid {
                path: "network.address".into(),
                expected: "the static address with its prefix length, e.g. 192.168.10.20/24".into(),
                found: "nothing (the key is missing)".into(),
            })?;
            let (address, prefix) = parse_cidr(&address_text).ok_or_else(|| {
                ConfigError::invalid(
                    "network.address",
                    "an IP address with its prefix length, e.g. 192.168.10.20/24",
                    &Value::String(address_text.clone()),
                )
            })?;
            let gateway = match r.string("network.gateway")? {
                None => None,
                Some(text) => Some(parse_ip("network.gateway", &text)?),
            };
            let mut dns = Vec::new();
            for (i, text) in r.string_list("network.dns")?.iter().enumerate() {
                dns.push(parse_ip(&format!("network.dns[{i}]"), text)?);
            }
            Ok(Some(StaticNetwork {
                address,
                prefix,
                gateway,
                dns,
            }))
        }
        Some(other) => Err(ConfigError::invalid(
            "network",
            "a mapping with address, gateway and dns",
            other,
        )),
    }
}

/// `ntp:`, each a host name or an IP address.
fn ntp_servers(r: &Reader<'_>) -> Result<Vec<String>, ConfigError> {
    let ntp = r.string_list("ntp")?;
    for (i, server) in ntp.iter().enumerate() {
        if server.parse::<IpAddr>().is_err() && !crate::init::is_dns_name(server) {
            return Err(ConfigError::invalid(
                &format!("ntp[{i}]"),
                "an NTP server's host name or IP address",
                &Value::String(server.clone()),
            ));
        }
    }
    Ok(ntp)
}

/// Refuses the first key none of the steps above read.
fn refuse_unknown_keys(r: &Reader<'_>) -> Result<(), ConfigError> {
    let unknown: Vec<String> = r
        .unread_paths()
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    match unknown.first() {
        Some(first) => Err(ConfigError::Invalid {
            path: first.clone(),
            expected: "only hostname, network.address, network.gateway, network.dns and ntp".into(),
            found: format!(
                "an unknown key ({})",
                describe(r.get(first).unwrap_or(&Value::Null))
            ),
        }),
        None => Ok(()),
    }
}

fn parse_ip(path: &str, text: &str) -> Result<IpAddr, ConfigError> {
    text.parse()
        .map_err(|_| ConfigError::invalid(path, "an IP address", &Value::String(text.to_string())))
}

/// `192.168.10.20/24` or `2001:db8::20/64`; the prefix must fit the address family.
fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (1..=max).contains(&prefix).then_some((address, prefix))
}

/// One DNS label: what `/etc/hostname` holds and `sethostname(2)` takes.
fn is_hostname(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && crate::init::is_dns_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_renders_networkd_and_timesyncd() {
        let s = MachineSettings::parse(
            "hostname: edge1\nnetwork:\n  address: 10.1.2.3/24\n  gateway: 10.1.2.1\n  dns: [10.1.2.2]\nntp: [ntp.example.com]\n",
        )
        .unwrap();
        assert_eq!(s.hostname.as_deref(), Some("edge1"));
        let networkd = s.networkd_file().unwrap();
        assert!(networkd.contains("Address=10.1.2.3/24\nGateway=10.1.2.1\nDNS=10.1.2.2\n"));
        assert_eq!(
            s.timesyncd_file().unwrap().lines().last(),
            Some("NTP=ntp.example.com")
        );
    }

    #[test]
    fn empty_file_means_dhcp() {
        let s = MachineSettings::parse("").unwrap();
        assert_eq!(s, MachineSettings::default());
        assert!(s.networkd_file().is_none() && s.timesyncd_file().is_none());
    }

    #[test]
    fn errors_name_the_key_and_what_was_expected() {
        for (text, key) in [
            ("network:\n  address: 10.1.2.3\n", "network.address"),
            ("network:\n  address: 10.1.2.3/33\n", "network.address"),
            ("network:\n  gateway: 10.1.2.1\n", "network.address"),
            (
                "network:\n  address: 10.1.2.3/24\n  gateway: router\n",
                "network.gateway",
            ),
            (
                "network:\n  address: 10.1.2.3/24\n  dns: [1.1.1.1, x y]\n",
                "network.dns[1]",
            ),
            ("hostname: edge_1\n", "hostname"),
            ("ntp: [\"bad name!\"]\n", "ntp[0]"),
            (
                "network:\n  address: 10.1.2.3/24\n  gatway: 10.1.2.1\n",
                "network.gatway",
            ),
        ] {
            let err = MachineSettings::parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{key}: expected")),
                "{text:?}: {err}"
            );
        }
    }
}
