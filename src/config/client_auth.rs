//! HTTPS and caller certificates: Butler's `restServerConfig.tls` and our
//! `ButlerEdge.clientAuth` (trusted caller CAs, CRLs, and the per-client permissions).
//!
//! Client entries are checked strictly: an unknown key in an entry is an error, not an
//! ignored key, because a misspelt restriction (`kvNamespace:`) would otherwise silently
//! grant everything.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use super::{ConfigError, Reader};
use crate::authz::{
    AuthMode, ClientRule, EndpointGroup, IdentityMatch, NamespacePattern, Policy, TokenDigest,
};
use crate::kv::NamespaceQuota;
use crate::tasks::StartTaskPolicy;

/// `Butler.restServerConfig.tls`.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub enable: bool,
    /// PEM server certificate (the leaf first; may carry its chain).
    pub cert: PathBuf,
    /// PEM private key (PKCS#1, PKCS#8 or SEC1).
    pub key: PathBuf,
    /// Optional PEM intermediate/CA bundle sent after the certificate.
    pub ca: Option<PathBuf>,
}

/// `ButlerEdge.clientAuth`.
#[derive(Debug, Clone, Default)]
pub struct ClientAuthConfig {
    pub enable: bool,
    /// CA bundles whose certificates may call.
    pub ca: Vec<PathBuf>,
    /// CRLs (PEM or DER) checked for those certificates.
    pub crl: Vec<PathBuf>,
    pub policy: Policy,
}

pub fn parse_tls(r: &Reader) -> Result<TlsConfig, ConfigError> {
    let enable = r.bool("Butler.restServerConfig.tls.enable", false)?;
    let cert = r.path("Butler.restServerConfig.tls.cert")?;
    let key = r.path("Butler.restServerConfig.tls.key")?;
    let ca = r.path("Butler.restServerConfig.tls.ca")?;
    if !enable {
        return Ok(TlsConfig {
            enable,
            cert: cert.unwrap_or_default(),
            key: key.unwrap_or_default(),
            ca,
        });
    }
    let required = |path: &str, value: Option<PathBuf>, what: &str| {
        value
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| ConfigError::Invalid {
                path: path.to_string(),
                expected: format!(
                    "the path of {what} (Butler.restServerConfig.tls.enable is true)"
                ),
                found: "nothing".to_string(),
            })
    };
    Ok(TlsConfig {
        enable,
        cert: required(
            "Butler.restServerConfig.tls.cert",
            cert,
            "the PEM server certificate",
        )?,
        key: required(
            "Butler.restServerConfig.tls.key",
            key,
            "the PEM private key of the server certificate",
        )?,
        ca: ca.filter(|p| !p.as_os_str().is_empty()),
    })
}

/// A file or a list of files.
fn paths(r: &Reader, path: &str) -> Result<Vec<PathBuf>, ConfigError> {
    match r.get(path) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![PathBuf::from(s)]),
        Some(Value::Array(_)) => Ok(r
            .string_list(path)?
            .into_iter()
            .map(PathBuf::from)
            .collect()),
        Some(other) => Err(ConfigError::invalid(
            path,
            "a file path or a list of them",
            other,
        )),
    }
}

pub fn parse_client_auth(r: &Reader, tls: &TlsConfig) -> Result<ClientAuthConfig, ConfigError> {
    let enable = r.bool("ButlerEdge.clientAuth.enable", false)?;
    let ca = paths(r, "ButlerEdge.clientAuth.ca")?;
    let crl = paths(r, "ButlerEdge.clientAuth.crl")?;
    let clients = parse_clients(r)?;
    let mode = parse_mode(r)?;
    if enable {
        every_client_can_authenticate(&clients, mode)?;
        check_needs(tls, &ca, mode)?;
    }
    Ok(ClientAuthConfig {
        enable,
        ca,
        crl,
        policy: Policy {
            enabled: enable,
            mode,
            clients,
        },
    })
}

/// The `clients` list, each entry with an identity, a token and a name no earlier entry has.
fn parse_clients(r: &Reader) -> Result<Vec<Arc<ClientRule>>, ConfigError> {
    let mut clients: Vec<Arc<ClientRule>> = Vec::new();
    for (i, item) in r.list("ButlerEdge.clientAuth.clients")?.iter().enumerate() {
        let rule = parse_client(&format!("ButlerEdge.clientAuth.clients[{i}]"), item)?;
        unlike_earlier_clients(i, &rule, &clients)?;
        clients.push(Arc::new(rule));
    }
    Ok(clients)
}

/// Refuses entry `i` when an earlier one already has its certificate identity, one of its
/// token digests or its name: each would make two entries answer for one caller.
fn unlike_earlier_clients(
    i: usize,
    rule: &ClientRule,
    clients: &[Arc<ClientRule>],
) -> Result<(), ConfigError> {
    if let Some(matcher) = &rule.matcher
        && let Some(earlier) = clients
            .iter()
            .find(|c| c.matcher.as_ref().is_some_and(|m| m.same_identity(matcher)))
    {
        return Err(ConfigError::Other(format!(
            "ButlerEdge.clientAuth.clients[{i}]: {} is already used by client {:?}; \
             each certificate identity may appear once",
            matcher.describe(),
            earlier.name
        )));
    }
    if let Some(earlier) = clients
        .iter()
        .find(|c| c.tokens.iter().any(|t| rule.tokens.contains(t)))
    {
        return Err(ConfigError::Other(format!(
            "ButlerEdge.clientAuth.clients[{i}].tokenSha256: a token digest is already held \
             by client {:?}; each token belongs to one client (create a new one with \
             `butler-edge token new NAME`)",
            earlier.name
        )));
    }
    // Names label answers in logs and 403s, and must not be mistaken for one another.
    if let Some(earlier) = clients.iter().position(|c| c.name == rule.name) {
        return Err(ConfigError::Other(format!(
            "ButlerEdge.clientAuth.clients[{i}].name: {:?} is already the name of \
             clients[{earlier}]; give each client its own name (an entry without `name` is \
             named by its commonName, dnsName or uri)",
            rule.name
        )));
    }
    Ok(())
}

/// `ButlerEdge.clientAuth.mode`: how callers prove who they are.
fn parse_mode(r: &Reader) -> Result<AuthMode, ConfigError> {
    match r.get("ButlerEdge.clientAuth.mode") {
        None | Some(Value::Null) => Ok(AuthMode::default()),
        Some(Value::String(s)) if AuthMode::parse(s).is_some() => {
            Ok(AuthMode::parse(s).unwrap_or_default())
        }
        Some(other) => Err(ConfigError::invalid(
            "ButlerEdge.clientAuth.mode",
            format!("one of {}", AuthMode::NAMES.join(", ")),
            other,
        )),
    }
}

/// An entry that cannot log in under `mode` is a mistake, not a client.
fn every_client_can_authenticate(
    clients: &[Arc<ClientRule>],
    mode: AuthMode,
) -> Result<(), ConfigError> {
    for (i, client) in clients.iter().enumerate() {
        let useless = match mode {
            AuthMode::Certificate => client.matcher.is_none(),
            AuthMode::Token => client.tokens.is_empty(),
            AuthMode::CertificateOrToken => false,
        };
        if useless {
            return Err(ConfigError::Other(format!(
                "ButlerEdge.clientAuth.clients[{i}] ({:?}) cannot authenticate: \
                 ButlerEdge.clientAuth.mode is {} and the entry has no {}; add one, or set the \
                 mode to certificateOrToken",
                client.name,
                mode.name(),
                if mode == AuthMode::Token {
                    "tokenSha256"
                } else {
                    "commonName, dnsName or uri"
                }
            )));
        }
    }
    Ok(())
}

/// What client authentication needs around it: HTTPS, and CAs when certificates are asked for.
fn check_needs(tls: &TlsConfig, ca: &[PathBuf], mode: AuthMode) -> Result<(), ConfigError> {
    if !tls.enable {
        return Err(ConfigError::Other(
            "ButlerEdge.clientAuth.enable is true but Butler.restServerConfig.tls.enable is \
             false: client certificates need HTTPS, and so do API tokens; enable TLS or disable \
             clientAuth"
                .to_string(),
        ));
    }
    if ca.is_empty() && mode.asks_for_certificate() {
        return Err(ConfigError::Invalid {
            path: "ButlerEdge.clientAuth.ca".to_string(),
            expected: "the PEM CA bundle(s) that issue caller certificates".to_string(),
            found: "nothing".to_string(),
        });
    }
    Ok(())
}

/// Namespaces a client limited to `kvNamespaces` patterns may have unless its entry says
/// otherwise (`maxNamespaces`).
const DEFAULT_CLIENT_NAMESPACES: u64 = 100;

const CLIENT_KEYS: &[&str] = &[
    "name",
    "commonName",
    "dnsName",
    "uri",
    "tokenSha256",
    "endpoints",
    "startTask",
    "kvNamespaces",
    "maxNamespaces",
];

fn text(path: &str, value: &Value) -> Result<String, ConfigError> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ConfigError::invalid(path, "a non-empty text value", other)),
    }
}

fn text_list(path: &str, value: Option<&Value>) -> Result<Vec<String>, ConfigError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| text(&format!("{path}[{i}]"), item))
            .collect(),
        Some(other) => Err(ConfigError::invalid(path, "a list", other)),
    }
}

fn parse_client(at: &str, item: &Value) -> Result<ClientRule, ConfigError> {
    let Value::Object(map) = item else {
        return Err(ConfigError::invalid(
            at,
            "a mapping with commonName, dnsName or uri, and endpoints",
            item,
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !CLIENT_KEYS.contains(&k.as_str())) {
        return Err(ConfigError::Other(format!(
            "{at}.{unknown}: unknown key; a client entry may have {}",
            CLIENT_KEYS.join(", ")
        )));
    }
    let field = |key: &str| map.get(key).filter(|v| !v.is_null());
    let tokens = parse_tokens(&format!("{at}.tokenSha256"), field("tokenSha256"))?;
    let (matcher, name) = parse_identity(at, &field, !tokens.is_empty())?;
    let endpoints = parse_endpoints(&format!("{at}.endpoints"), field("endpoints"))?;
    let start_task = match field("startTask") {
        None => None,
        Some(v) => Some(parse_start_task(&format!("{at}.startTask"), v)?),
    };
    let namespaces = match field("kvNamespaces") {
        None => None,
        Some(v) => Some(
            text_list(&format!("{at}.kvNamespaces"), Some(v))?
                .iter()
                .map(|p| NamespacePattern::parse(p))
                .collect(),
        ),
    };
    let max_namespaces = match field("maxNamespaces") {
        None => DEFAULT_CLIENT_NAMESPACES,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => n.as_u64().unwrap_or(1),
        Some(other) => {
            return Err(ConfigError::invalid(
                &format!("{at}.maxNamespaces"),
                "a whole number of at least 1",
                other,
            ));
        }
    };
    let namespace_quota = namespaces.as_ref().map(|patterns: &Vec<NamespacePattern>| {
        let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
        for pattern in patterns {
            match pattern {
                NamespacePattern::Exact(name) => exact.push(name.clone()),
                NamespacePattern::Prefix(prefix) => prefixes.push(prefix.clone()),
            }
        }
        Arc::new(NamespaceQuota {
            exact,
            prefixes,
            max: max_namespaces,
            client: format!("{at} ({name:?})"),
            config_key: format!("{at}.maxNamespaces"),
        })
    });
    Ok(ClientRule {
        name,
        matcher,
        tokens,
        endpoints,
        start_task,
        namespaces,
        namespace_quota,
    })
}

/// Most token digests one client may hold: the current one and, during a rotation, the next.
pub const MAX_TOKENS_PER_CLIENT: usize = 2;

/// `tokenSha256`: one or two hex SHA-256 digests of tokens (`butler-edge token new` prints
/// them). Only digests are accepted, so the config never holds a usable token.
fn parse_tokens(at: &str, value: Option<&Value>) -> Result<Vec<TokenDigest>, ConfigError> {
    let texts = match value {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(v) => text_list(at, Some(v))?,
    };
    if texts.len() > MAX_TOKENS_PER_CLIENT {
        return Err(ConfigError::Other(format!(
            "{at}: {} token digests; a client may hold at most {MAX_TOKENS_PER_CLIENT} (the \
             current token and the next one during a rotation)",
            texts.len()
        )));
    }
    texts
        .iter()
        .enumerate()
        .map(|(i, hex)| {
            parse_digest(hex).ok_or_else(|| {
                ConfigError::Other(format!(
                    "{at}[{i}]: expected the 64 hex digits of a token's SHA-256, as printed by \
                     `butler-edge token new NAME` (never the token itself), found {} characters",
                    hex.len()
                ))
            })
        })
        .collect()
}

fn parse_digest(hex: &str) -> Option<TokenDigest> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Which certificate the entry is (at most one of commonName, dnsName, uri; exactly one
/// without tokens) and its name (required for a token-only client).
fn parse_identity<'v>(
    at: &str,
    field: &impl Fn(&str) -> Option<&'v Value>,
    has_tokens: bool,
) -> Result<(Option<IdentityMatch>, String), ConfigError> {
    let mut matchers = Vec::new();
    if let Some(v) = field("commonName") {
        matchers.push(IdentityMatch::CommonName(text(
            &format!("{at}.commonName"),
            v,
        )?));
    }
    if let Some(v) = field("dnsName") {
        matchers.push(IdentityMatch::DnsName(text(&format!("{at}.dnsName"), v)?));
    }
    if let Some(v) = field("uri") {
        matchers.push(IdentityMatch::Uri(text(&format!("{at}.uri"), v)?));
    }
    if matchers.len() > 1 || (matchers.is_empty() && !has_tokens) {
        return Err(ConfigError::Other(format!(
            "{at}: give exactly one of commonName, dnsName or uri to say which certificate \
             this client is, or tokenSha256 for a client that sends an API token (found {} \
             certificate identities)",
            matchers.len()
        )));
    }
    let matcher = matchers.pop();
    let name = match (field("name"), &matcher) {
        (Some(v), _) => text(&format!("{at}.name"), v)?,
        (
            None,
            Some(IdentityMatch::CommonName(v) | IdentityMatch::DnsName(v) | IdentityMatch::Uri(v)),
        ) => v.clone(),
        (None, None) => {
            return Err(ConfigError::Other(format!(
                "{at}: a client known only by tokenSha256 needs a `name` (it labels the \
                 client in logs and messages)"
            )));
        }
    };
    Ok((matcher, name))
}

/// The endpoint groups an entry may use, each checked against [`EndpointGroup::ALL`].
fn parse_endpoints(
    endpoints_path: &str,
    value: Option<&Value>,
) -> Result<BTreeSet<&'static str>, ConfigError> {
    let mut endpoints = BTreeSet::new();
    for (i, group) in text_list(endpoints_path, value)?.iter().enumerate() {
        match EndpointGroup::ALL.iter().find(|g| g.name() == group) {
            Some(g) => {
                endpoints.insert(g.name());
            }
            None => {
                return Err(ConfigError::invalid(
                    &format!("{endpoints_path}[{i}]"),
                    format!(
                        "one of {}",
                        EndpointGroup::ALL
                            .iter()
                            .map(|g| g.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &Value::String(group.clone()),
                ));
            }
        }
    }
    Ok(endpoints)
}

/// A client's own start-task allow list (`startTask: {taskId, tag, customProperty}`).
fn parse_start_task(st_path: &str, value: &Value) -> Result<StartTaskPolicy, ConfigError> {
    let Value::Object(st) = value else {
        return Err(ConfigError::invalid(
            st_path,
            "a mapping with taskId, tag and customProperty lists",
            value,
        ));
    };
    if let Some(unknown) = st
        .keys()
        .find(|k| !["taskId", "tag", "customProperty"].contains(&k.as_str()))
    {
        return Err(ConfigError::Other(format!(
            "{st_path}.{unknown}: unknown key; startTask may have taskId, tag, customProperty"
        )));
    }
    let task_ids: HashSet<String> = text_list(&format!("{st_path}.taskId"), st.get("taskId"))?
        .into_iter()
        .collect();
    let tags: HashSet<String> = text_list(&format!("{st_path}.tag"), st.get("tag"))?
        .into_iter()
        .collect();
    let mut custom_properties = HashSet::new();
    let cp_path = format!("{st_path}.customProperty");
    match st.get("customProperty") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, cp) in items.iter().enumerate() {
                let get = |k: &str| {
                    let p = format!("{cp_path}[{i}].{k}");
                    text(&p, cp.get(k).unwrap_or(&Value::Null))
                };
                custom_properties.insert((get("name")?, get("value")?));
            }
        }
        Some(other) => return Err(ConfigError::invalid(&cp_path, "a list", other)),
    }
    Ok(StartTaskPolicy {
        enabled: true,
        task_ids,
        tags,
        custom_properties,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "Butler:\n  restServerConfig:\n    tls:\n      enable: true\n      cert: /c.pem\n      key: /k.pem\nButlerEdge:\n  clientAuth:\n    enable: true\n    ca: /ca.pem\n    clients:\n";

    #[test]
    fn a_full_client_entry() {
        let c = Config::parse(
            &format!(
                "{BASE}      - name: ERP\n        uri: spiffe://corp/erp\n        endpoints: [startTask, kvRead]\n        startTask:\n          taskId: [abc]\n          customProperty: [{{name: Dept, value: Sales}}]\n        kvNamespaces: [Sales, 'etl-*']\n"
            ),
            "t",
        )
        .unwrap();
        let rule = &c.client_auth.policy.clients[0];
        assert_eq!(rule.name, "ERP");
        assert_eq!(
            rule.endpoints.iter().copied().collect::<Vec<_>>(),
            ["kvRead", "startTask"]
        );
        let st = rule.start_task.as_ref().unwrap();
        assert!(st.allows_task_id("abc") && !st.allows_tag("x"));
        assert!(st.allows_custom_property("Dept", "Sales"));
        assert_eq!(rule.namespaces.as_ref().unwrap().len(), 2);
        assert!(c.ignored_keys.is_empty(), "{:?}", c.ignored_keys);
    }

    #[test]
    fn misspelt_keys_and_groups_are_errors() {
        let e = Config::parse(
            &format!("{BASE}      - commonName: a\n        kvNamespace: [x]\n"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("clients[0].kvNamespace: unknown key"), "{e}");
        let e = Config::parse(
            &format!("{BASE}      - commonName: a\n        endpoints: [kvread]\n"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("ButlerEdge.clientAuth.clients[0].endpoints[0]: expected one of ping"),
            "{e}"
        );
        let e = Config::parse(&format!("{BASE}      - name: a\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exactly one of commonName, dnsName or uri"),
            "{e}"
        );
        let e = Config::parse(
            &format!("{BASE}      - commonName: a\n      - commonName: a\n"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("clients[1]: commonName \"a\" is already used"),
            "{e}"
        );
    }

    #[test]
    fn client_auth_needs_tls_and_a_ca() {
        let e = Config::parse(
            "Butler:\n  logLevel: info\nButlerEdge:\n  clientAuth:\n    enable: true\n    ca: /ca.pem\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("client certificates need HTTPS"), "{e}");
        let e = Config::parse(
            "Butler:\n  restServerConfig:\n    tls:\n      enable: true\n      cert: /c.pem\n      key: /k.pem\nButlerEdge:\n  clientAuth:\n    enable: true\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("ButlerEdge.clientAuth.ca: expected"), "{e}");
        let e = Config::parse(
            "Butler:\n  restServerConfig:\n    tls:\n      enable: true\n      key: /k.pem\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("Butler.restServerConfig.tls.cert: expected the path"),
            "{e}"
        );
    }

    #[test]
    fn token_clients_hold_digests_only_and_fit_the_mode() {
        let d1 = "a".repeat(64);
        let d2 = "b".repeat(64);
        let base = BASE.replace(
            "    clients:\n",
            "    mode: certificateOrToken\n    clients:\n",
        );
        let c = Config::parse(
            &format!("{base}      - name: etl\n        tokenSha256: [{d1}, {d2}]\n        endpoints: [ping]\n"),
            "t",
        )
        .unwrap();
        let rule = &c.client_auth.policy.clients[0];
        assert_eq!((rule.tokens.len(), rule.matcher.is_none()), (2, true));
        let err = |yaml: String| Config::parse(&yaml, "t").unwrap_err().to_string();
        let e = err(format!(
            "{base}      - name: etl\n        tokenSha256: bet_0123\n"
        ));
        assert!(
            e.contains("tokenSha256[0]: expected the 64 hex digits"),
            "{e}"
        );
        assert!(!e.contains("bet_0123"), "the value is echoed: {e}");
        let e = err(format!(
            "{base}      - name: etl\n        tokenSha256: [{d1}, {d2}, {d1}]\n"
        ));
        assert!(e.contains("at most 2"), "{e}");
        let e = err(format!("{base}      - tokenSha256: {d1}\n"));
        assert!(e.contains("needs a `name`"), "{e}");
        let e = err(format!(
            "{base}      - name: a\n        tokenSha256: {d1}\n      - name: b\n        tokenSha256: {d1}\n"
        ));
        assert!(e.contains("already held by client \"a\""), "{e}");
        let e = err(format!(
            "{BASE}      - name: a\n        tokenSha256: {d1}\n"
        ));
        assert!(
            e.contains("mode is certificate and the entry has no commonName"),
            "{e}"
        );
        let e = err(base.replace("certificateOrToken", "tokens"));
        assert!(
            e.starts_with("ButlerEdge.clientAuth.mode: expected one of certificate"),
            "{e}"
        );
    }
}
