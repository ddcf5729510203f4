//! Caller identity → permissions.
//!
//! With `ButlerEdge.clientAuth` on, every connection has presented a certificate that the
//! TLS layer already verified (trusted CA, in its validity window, not revoked). This module
//! decides what that caller may do: it finds the caller's entry in `clients` (by subject
//! common name, DNS SAN or URI SAN), and checks each request against the entry's endpoint
//! groups, key-value namespaces and start-task allow-list. A refusal is a [`Denied`] naming the
//! caller and what was refused; the HTTP edge (`http::error`) answers it with a 403 in Butler's
//! shape. Nothing here knows HTTP: the router describes the refused request in words.
//!
//! The identity is fixed per connection ([`Caller`], from the handshake); the policy it is
//! looked up in is the current one, so a `SIGHUP` that narrows a client's rights applies to
//! its next request, even on a kept-alive connection.
//!
//! A caller without a certificate may instead send an API token with each request
//! ([`Policy::authenticate`], per `ButlerEdge.clientAuth.mode`): the config holds only each
//! token's SHA-256 ([`token_digest`]), compared in constant time with every client's; a token
//! that is refused is an [`Unauthenticated`] (401), never echoed anywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::kv::NamespaceQuota;
use crate::tasks::StartTaskPolicy;

/// Declares [`EndpointGroup`] with its config name and whether it changes anything, so that
/// [`EndpointGroup::ALL`], the names client permissions are validated against and the access
/// log's level come from one list the compiler keeps complete.
macro_rules! endpoint_groups {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, mutates: $mutates:literal; )*) => {
        /// Endpoint groups: the unit in which endpoints are enabled (and, with client
        /// certificates, permitted). A client entry's `endpoints` lists these names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum EndpointGroup {
            $( $(#[$doc])* $variant, )*
        }

        impl EndpointGroup {
            /// Every group, in declaration order (config validation lists them).
            pub const ALL: &'static [EndpointGroup] = &[$(EndpointGroup::$variant),*];

            /// The name used in `ButlerEdge.clientAuth.clients[].endpoints` and in messages.
            pub fn name(self) -> &'static str {
                match self {
                    $(EndpointGroup::$variant => $name,)*
                }
            }

            /// Whether requests of this group change something (store writes, task starts):
            /// those are logged at info level.
            pub fn mutates(self) -> bool {
                match self {
                    $(EndpointGroup::$variant => $mutates,)*
                }
            }
        }
    };
}

endpoint_groups! {
    /// `GET /v4/butlerping`.
    Ping => "ping", mutates: false;
    /// `GET /v4/configfile/endpointsenabled`.
    EndpointsEnabled => "endpointsEnabled", mutates: false;
    /// Key-value reads and listings.
    KvRead => "kvRead", mutates: false;
    /// Key-value creates and deletes (and start-task's key-value items).
    KvWrite => "kvWrite", mutates: true;
    /// `PUT|POST /v4/reloadtask/{id}/start`.
    StartTask => "startTask", mutates: true;
    /// `GET /health` (`ButlerEdge.endpointsEnable.health`).
    Health => "health", mutates: false;
    /// `GET /metrics` (`ButlerEdge.endpointsEnable.metrics`).
    Metrics => "metrics", mutates: false;
    /// The appliance's administration: store export and restore, updates
    /// (`ButlerEdge.endpointsEnable.admin`; needs client authentication).
    Admin => "admin", mutates: true;
}

/// A request this caller may not make. `Display` is the message the caller reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// A listed client asked for an endpoint group not in its `endpoints`.
    Group {
        client: String,
        group: EndpointGroup,
        /// The refused request, as the router describes it (`POST /v4/keyvalues/a`).
        request: String,
        allowed: Vec<&'static str>,
    },
    /// A certificate no `clients` entry names asked for an endpoint group.
    UnlistedGroup {
        label: String,
        group: EndpointGroup,
        request: String,
    },
    /// A listed client asked for a namespace outside its `namespaces`.
    Namespace {
        client: String,
        namespace: String,
        allowed: Vec<String>,
    },
    /// A certificate no `clients` entry names asked for a namespace.
    UnlistedNamespace { label: String, namespace: String },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |items: &[String], none: &str| {
            if items.is_empty() {
                none.to_string()
            } else {
                items.join(", ")
            }
        };
        match self {
            Denied::Group {
                client,
                group,
                request,
                allowed,
            } => {
                let allowed: Vec<String> = allowed.iter().map(|g| g.to_string()).collect();
                write!(
                    f,
                    "Client {client:?} is not permitted to use {} (refused: {request}); it may \
                     use: {}",
                    group.name(),
                    list(&allowed, "nothing")
                )
            }
            Denied::UnlistedGroup {
                label,
                group,
                request,
            } => write!(
                f,
                "Client certificate {label} is not listed in ButlerEdge.clientAuth.clients, so it \
                 may not use {} (refused: {request})",
                group.name()
            ),
            Denied::Namespace {
                client,
                namespace,
                allowed,
            } => write!(
                f,
                "Client {client:?} is not permitted to use key-value namespace {namespace:?}; it \
                 may use: {}",
                list(allowed, "none")
            ),
            Denied::UnlistedNamespace { label, namespace } => write!(
                f,
                "Client certificate {label} is not listed in ButlerEdge.clientAuth.clients, so it \
                 may not use key-value namespace {namespace:?}"
            ),
        }
    }
}

impl std::error::Error for Denied {}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
}

impl CertIdentity {
    /// Reads the subject CN and the DNS and URI SANs of a DER certificate. The TLS layer has
    /// verified the certificate already; a certificate this parser cannot read yields an
    /// identity that matches no client.
    pub fn from_der(der: &[u8]) -> CertIdentity {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return CertIdentity::default();
        };
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut identity = CertIdentity {
            common_name,
            ..CertIdentity::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => identity.dns_names.push(dns.to_string()),
                    GeneralName::URI(uri) => identity.uris.push(uri.to_string()),
                    _ => {}
                }
            }
        }
        identity
    }

    /// How the certificate is named in logs and 403 messages when no client entry matches
    /// it; cut at [`MAX_LABEL_CHARS`], since anyone can put any name in a certificate.
    pub fn label(&self) -> String {
        let (kind, name) = if let Some(cn) = &self.common_name {
            ("CN", cn)
        } else if let Some(dns) = self.dns_names.first() {
            ("DNS", dns)
        } else if let Some(uri) = self.uris.first() {
            ("URI", uri)
        } else {
            return "certificate without CN or SAN".to_string();
        };
        match name.char_indices().nth(MAX_LABEL_CHARS) {
            Some((cut, _)) => format!("{kind}={}…", &name[..cut]),
            None => format!("{kind}={name}"),
        }
    }
}

/// The most characters of a certificate's name that [`CertIdentity::label`] shows.
pub const MAX_LABEL_CHARS: usize = 128;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Client certificates are not required (plain HTTP, or TLS without `clientAuth`).
    Anonymous,
    /// A client certificate verified in the handshake.
    Certificate(Arc<CertIdentity>),
}

/// How a `clients` entry recognises its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityMatch {
    /// The subject's common name, exactly.
    CommonName(String),
    /// A DNS name in the subject alternative names (case-insensitive, as DNS).
    DnsName(String),
    /// A URI in the subject alternative names, exactly.
    Uri(String),
}

impl IdentityMatch {
    pub fn matches(&self, id: &CertIdentity) -> bool {
        match self {
            IdentityMatch::CommonName(cn) => id.common_name.as_deref() == Some(cn.as_str()),
            IdentityMatch::DnsName(dns) => id.dns_names.iter().any(|d| d.eq_ignore_ascii_case(dns)),
            IdentityMatch::Uri(uri) => id.uris.iter().any(|u| u == uri),
        }
    }

    /// Whether both name the same certificate identity (DNS names compare as DNS does).
    pub fn same_identity(&self, other: &IdentityMatch) -> bool {
        match (self, other) {
            (IdentityMatch::DnsName(a), IdentityMatch::DnsName(b)) => a.eq_ignore_ascii_case(b),
            _ => self == other,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            IdentityMatch::CommonName(v) => format!("commonName {v:?}"),
            IdentityMatch::DnsName(v) => format!("dnsName {v:?}"),
            IdentityMatch::Uri(v) => format!("uri {v:?}"),
        }
    }
}

/// A key-value namespace a client may use: an exact name, or a prefix (written with a
/// trailing `*` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespacePattern {
    Exact(String),
    Prefix(String),
}

impl NamespacePattern {
    pub fn parse(text: &str) -> NamespacePattern {
        match text.strip_suffix('*') {
            Some(prefix) => NamespacePattern::Prefix(prefix.to_string()),
            None => NamespacePattern::Exact(text.to_string()),
        }
    }

    pub fn matches(&self, namespace: &str) -> bool {
        match self {
            NamespacePattern::Exact(name) => name == namespace,
            NamespacePattern::Prefix(prefix) => namespace.starts_with(prefix.as_str()),
        }
    }

    fn display(&self) -> String {
        match self {
            NamespacePattern::Exact(name) => format!("{name:?}"),
            NamespacePattern::Prefix(prefix) => format!("{prefix:?}*"),
        }
    }
}

/// One entry of `ButlerEdge.clientAuth.clients`: who, and what they may do.
#[derive(Debug, Clone)]
pub struct ClientRule {
    /// Shown in logs and 403 messages; defaults to the matched value.
    pub name: String,
    /// The certificate this client presents; `None` for a client known only by tokens.
    pub matcher: Option<IdentityMatch>,
    /// SHA-256 digests of the API tokens this client may send (`tokenSha256`, at most two so
    /// a rotation can overlap); empty for a certificate-only client.
    pub tokens: Vec<TokenDigest>,
    pub endpoints: BTreeSet<&'static str>,
    /// `None`: any task the global `Butler.startTaskFilter` allows.
    pub start_task: Option<StartTaskPolicy>,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<NamespacePattern>>,
    /// With `namespaces`: how many namespaces its patterns may match
    /// (`clients[].maxNamespaces`), checked by the store when one is created.
    pub namespace_quota: Option<Arc<NamespaceQuota>>,
}

/// The SHA-256 digest of an API token.
pub type TokenDigest = [u8; 32];

/// How callers prove who they are (`ButlerEdge.clientAuth.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// A client certificate is required in the TLS handshake; tokens are not accepted
    /// (the default, and the behaviour before tokens existed).
    #[default]
    Certificate,
    /// A client certificate is asked for but optional; a caller without one must send a
    /// token with every request.
    CertificateOrToken,
    /// No client certificate is asked for; every request must carry a token.
    Token,
}

impl AuthMode {
    pub const NAMES: &'static [&'static str] = &["certificate", "certificateOrToken", "token"];

    pub fn parse(text: &str) -> Option<AuthMode> {
        match text {
            "certificate" => Some(AuthMode::Certificate),
            "certificateOrToken" => Some(AuthMode::CertificateOrToken),
            "token" => Some(AuthMode::Token),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Certificate => "certificate",
            AuthMode::CertificateOrToken => "certificateOrToken",
            AuthMode::Token => "token",
        }
    }

    /// Whether the handshake asks for a client certificate at all.
    pub fn asks_for_certificate(self) -> bool {
        self != AuthMode::Token
    }

    /// Whether requests may authenticate with a token.
    pub fn accepts_tokens(self) -> bool {
        self != AuthMode::Certificate
    }
}

/// The client list in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Whether callers must authenticate (and so whether rules apply at all).
    pub enabled: bool,
    pub mode: AuthMode,
    pub clients: Vec<Arc<ClientRule>>,
}

/// Why a request's credentials were not accepted: answered 401, with `WWW-Authenticate`.
/// `Display` is the message the caller reads; it never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// A token on a plain-HTTP listener: it crossed the network in clear.
    PlainHttp,
    /// A token while `clientAuth.mode` is `certificate`.
    TokensOff,
    /// A token that no client entry holds (wrong, unknown or revoked).
    UnknownToken,
    /// Neither a certificate nor a token, where one of them is required.
    Missing,
}

impl Unauthenticated {
    /// The short reason used in logs and as the metrics outcome.
    pub fn reason(self) -> &'static str {
        match self {
            Unauthenticated::PlainHttp => "token_over_plain_http",
            Unauthenticated::TokensOff => "tokens_not_accepted",
            Unauthenticated::UnknownToken => "unknown_token",
            Unauthenticated::Missing => "no_credentials",
        }
    }
}

impl std::fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unauthenticated::PlainHttp => {
                "API tokens are accepted only over HTTPS: this token was sent in clear over plain \
                 HTTP and must be treated as leaked. Revoke it (remove its tokenSha256 from \
                 ButlerEdge.clientAuth.clients), create a new one with `butler-edge token new`, \
                 and call the HTTPS listener"
            }
            Unauthenticated::TokensOff => {
                "API tokens are not accepted: ButlerEdge.clientAuth.mode is certificate; present \
                 a client certificate, or set the mode to certificateOrToken or token"
            }
            Unauthenticated::UnknownToken => {
                "The API token is not valid: no entry in ButlerEdge.clientAuth.clients holds it \
                 (wrong, unknown or revoked token)"
            }
            Unauthenticated::Missing => {
                "Authentication required: present a client certificate or send an API token \
                 (Authorization: Bearer <token>, or X-Api-Key: <token>)"
            }
        })
    }
}

/// How a request authenticated, for the metrics: `certificate`, `token` or `none`.
pub fn method_of(caller: &Caller, token: Option<&str>) -> &'static str {
    match (caller, token) {
        (Caller::Certificate(_), _) => "certificate",
        (_, Some(_)) => "token",
        _ => "none",
    }
}

/// The SHA-256 of a token. A fast hash is right here, unlike for passwords: a token is 256
/// random bits, so there is no dictionary to try and nothing a slow hash would protect; the
/// digest only keeps the config from holding a usable secret.
pub fn token_digest(token: &str) -> TokenDigest {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A new API token and the hex SHA-256 digest that goes into the config: 256 bits from the
/// system's secure random source, as 64 hex digits after `bet_` (so secret scanners and
/// people can tell one when they see it).
pub fn new_token() -> Result<(String, String), String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random number source failed".to_string())?;
    let token = format!("bet_{}", hex(&bytes));
    let digest = hex(&token_digest(&token));
    Ok((token, digest))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality of two digests in time independent of where they differ (no early exit), by
/// the `subtle` crate, whose comparison is written so the optimiser cannot add one back.
fn digests_equal(a: &TokenDigest, b: &TokenDigest) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

impl Policy {
    /// What `caller` may do under this policy.
    pub fn resolve(&self, caller: &Caller) -> Access {
        match caller {
            _ if !self.enabled => Access::Open,
            Caller::Anonymous => Access::Unknown {
                label: "anonymous".to_string(),
            },
            Caller::Certificate(id) => match self
                .clients
                .iter()
                .find(|c| c.matcher.as_ref().is_some_and(|m| m.matches(id)))
            {
                Some(rule) => Access::Client(rule.clone()),
                None => Access::Unknown { label: id.label() },
            },
        }
    }

    /// What one request may do: `caller` from the handshake, `token` from its headers,
    /// `over_tls` whether the listener is HTTPS. A certificate, when presented, decides;
    /// a token is used only by a caller without one.
    pub fn authenticate(
        &self,
        caller: &Caller,
        token: Option<&str>,
        over_tls: bool,
    ) -> Result<Access, Unauthenticated> {
        if token.is_some() && !over_tls {
            return Err(Unauthenticated::PlainHttp);
        }
        if !self.enabled || matches!(caller, Caller::Certificate(_)) {
            return Ok(self.resolve(caller));
        }
        match token {
            None if self.mode.accepts_tokens() => Err(Unauthenticated::Missing),
            None => Ok(self.resolve(caller)),
            Some(_) if !self.mode.accepts_tokens() => Err(Unauthenticated::TokensOff),
            Some(token) => self
                .client_of_token(&token_digest(token))
                .map(Access::Client)
                .ok_or(Unauthenticated::UnknownToken),
        }
    }

    /// The client a token belongs to (for naming it in a log line), if any.
    pub fn token_owner(&self, token: &str) -> Option<Arc<ClientRule>> {
        self.client_of_token(&token_digest(token))
    }

    /// The client holding a token digest. Every digest of every client is compared, in
    /// constant time, whether or not one matched already: the time taken says nothing about
    /// which client (or which byte) matched.
    fn client_of_token(&self, digest: &TokenDigest) -> Option<Arc<ClientRule>> {
        let mut found = None;
        for client in &self.clients {
            for held in &client.tokens {
                if digests_equal(held, digest) {
                    found = Some(client.clone());
                }
            }
        }
        found
    }
}

/// The permissions one request is checked against. Travels with the request as an
/// extension set by the connection.
#[derive(Debug, Clone)]
pub enum Access {
    /// Client authentication is off: what the config enables is open to every caller.
    Open,
    /// A known client.
    Client(Arc<ClientRule>),
    /// A certificate the CA vouches for but no `clients` entry names: nothing is allowed.
    Unknown { label: String },
}

impl Access {
    /// The caller as the access log and 403 messages name it; `-` without client auth.
    pub fn name(&self) -> &str {
        match self {
            Access::Open => "-",
            Access::Client(rule) => &rule.name,
            Access::Unknown { label } => label,
        }
    }

    /// The caller's namespace quota, when its client entry limits it to namespace patterns.
    pub fn namespace_quota(&self) -> Option<Arc<NamespaceQuota>> {
        match self {
            Access::Client(rule) => rule.namespace_quota.clone(),
            _ => None,
        }
    }

    /// Who the caller is, for what must belong to one caller (Idempotency-Key answers, its
    /// share of the QRS calls): the certificate identity its client entry matches (unique in
    /// the config), not the free-text name; `-` without client certificates.
    pub fn identity(&self) -> String {
        match self {
            Access::Open => "-".to_string(),
            Access::Client(rule) => match &rule.matcher {
                Some(IdentityMatch::DnsName(dns)) => {
                    format!("dnsName={}", dns.to_ascii_lowercase())
                }
                Some(IdentityMatch::CommonName(cn)) => format!("commonName={cn}"),
                Some(IdentityMatch::Uri(uri)) => format!("uri={uri}"),
                // Client names are unique in the config.
                None => format!("token client {}", rule.name),
            },
            Access::Unknown { label } => format!("unlisted {label}"),
        }
    }

    /// Whether this caller may use an endpoint group at all. `request` names the refused
    /// request in the message (`POST /v4/keyvalues/a`).
    pub fn check_group(&self, group: EndpointGroup, request: &str) -> Result<(), Denied> {
        match self {
            Access::Open => Ok(()),
            Access::Client(rule) if rule.endpoints.contains(group.name()) => Ok(()),
            Access::Client(rule) => Err(Denied::Group {
                client: rule.name.clone(),
                group,
                request: request.to_string(),
                allowed: rule.endpoints.iter().copied().collect(),
            }),
            Access::Unknown { label } => Err(Denied::UnlistedGroup {
                label: label.clone(),
                group,
                request: request.to_string(),
            }),
        }
    }

    /// Whether this caller may use a key-value namespace.
    pub fn check_namespace(&self, namespace: &str) -> Result<(), Denied> {
        match self {
            Access::Client(rule) if !self.allows_namespace(namespace) => Err(Denied::Namespace {
                client: rule.name.clone(),
                namespace: namespace.to_string(),
                allowed: rule
                    .namespaces
                    .iter()
                    .flatten()
                    .map(NamespacePattern::display)
                    .collect(),
            }),
            Access::Unknown { label } => Err(Denied::UnlistedNamespace {
                label: label.clone(),
                namespace: namespace.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether a namespace is one this caller may see (for listing namespaces).
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Client(rule) => match &rule.namespaces {
                None => true,
                Some(patterns) => patterns.iter().any(|p| p.matches(namespace)),
            },
            Access::Unknown { .. } => false,
        }
    }

    /// The start-task allow-list for this caller: the global `Butler.startTaskFilter`,
    /// narrowed by the client's own list when it has one (a task must be on both).
    pub fn start_task_policy(&self, global: &StartTaskPolicy) -> StartTaskPolicy {
        let own = match self {
            Access::Open => None,
            Access::Client(rule) => rule.start_task.as_ref(),
            Access::Unknown { .. } => {
                return StartTaskPolicy {
                    enabled: true,
                    ..StartTaskPolicy::default()
                };
            }
        };
        match own {
            None => global.clone(),
            Some(own) if !global.enabled => own.clone(),
            Some(own) => StartTaskPolicy {
                enabled: own.enabled || global.enabled,
                task_ids: intersect(&own.task_ids, &global.task_ids, own.enabled),
                tags: intersect(&own.tags, &global.tags, own.enabled),
                custom_properties: intersect(
                    &own.custom_properties,
                    &global.custom_properties,
                    own.enabled,
                ),
            },
        }
    }
}

fn intersect<T: Clone + Eq + std::hash::Hash>(
    own: &std::collections::HashSet<T>,
    global: &std::collections::HashSet<T>,
    own_enabled: bool,
) -> std::collections::HashSet<T> {
    if own_enabled {
        own.intersection(global).cloned().collect()
    } else {
        global.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(endpoints: &[&'static str], namespaces: Option<&[&str]>) -> Access {
        Access::Client(Arc::new(ClientRule {
            name: "etl".to_string(),
            matcher: Some(IdentityMatch::CommonName("etl".to_string())),
            tokens: Vec::new(),
            endpoints: endpoints.iter().copied().collect(),
            start_task: None,
            namespaces: namespaces.map(|n| n.iter().map(|p| NamespacePattern::parse(p)).collect()),
            namespace_quota: None,
        }))
    }

    #[test]
    fn namespaces_exact_and_prefix() {
        let access = rule(&["kvRead"], Some(&["Sales", "etl-*"]));
        assert!(access.allows_namespace("Sales"));
        assert!(!access.allows_namespace("Sales2"));
        assert!(access.allows_namespace("etl-"));
        assert!(access.allows_namespace("etl-daily"));
        assert!(!access.allows_namespace("xetl-daily"));
        let e = access.check_namespace("HR").unwrap_err().to_string();
        assert!(e.contains("\"etl\""), "{e}");
        assert!(e.contains("\"HR\""), "{e}");
        assert!(rule(&["kvRead"], None).allows_namespace("anything"));
    }

    #[test]
    fn groups_name_the_caller_and_the_refusal() {
        let access = rule(&["kvRead", "ping"], None);
        assert!(
            access
                .check_group(EndpointGroup::KvRead, "GET /v4/keylist/a")
                .is_ok()
        );
        let e = access
            .check_group(EndpointGroup::KvWrite, "POST /v4/keyvalues/a")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Client \"etl\" is not permitted to use kvWrite (refused: POST /v4/keyvalues/a); \
             it may use: kvRead, ping"
        );
    }

    #[test]
    fn client_list_narrows_the_global_filter() {
        let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        let global = StartTaskPolicy {
            enabled: true,
            task_ids: set(&["a", "b"]),
            tags: set(&["t1"]),
            custom_properties: Default::default(),
        };
        let own = StartTaskPolicy {
            enabled: true,
            task_ids: set(&["b", "c"]),
            tags: set(&["t1", "t2"]),
            custom_properties: Default::default(),
        };
        let access = Access::Client(Arc::new(ClientRule {
            name: "x".into(),
            matcher: Some(IdentityMatch::Uri("spiffe://x".into())),
            tokens: Vec::new(),
            endpoints: BTreeSet::new(),
            start_task: Some(own.clone()),
            namespaces: None,
            namespace_quota: None,
        }));
        let p = access.start_task_policy(&global);
        assert!(p.allows_task_id("b"));
        assert!(!p.allows_task_id("a") && !p.allows_task_id("c"));
        assert!(p.allows_tag("t1") && !p.allows_tag("t2"));
        let p = access.start_task_policy(&StartTaskPolicy::unrestricted());
        assert!(p.allows_task_id("c") && !p.allows_task_id("a"));
        assert!(Access::Open.start_task_policy(&global).allows_task_id("a"));
    }

    #[test]
    fn matching_by_cn_dns_and_uri() {
        let id = CertIdentity {
            common_name: Some("Sense Prod".into()),
            dns_names: vec!["sense.corp.example".into()],
            uris: vec!["spiffe://corp/sense".into()],
        };
        assert!(IdentityMatch::CommonName("Sense Prod".into()).matches(&id));
        assert!(!IdentityMatch::CommonName("sense prod".into()).matches(&id));
        assert!(IdentityMatch::DnsName("SENSE.corp.example".into()).matches(&id));
        assert!(IdentityMatch::Uri("spiffe://corp/sense".into()).matches(&id));
        assert!(!IdentityMatch::Uri("spiffe://corp/other".into()).matches(&id));
    }

    #[test]
    fn tokens_authenticate_only_over_tls_and_only_where_the_mode_accepts_them() {
        let rule = |name: &str, token: &str| {
            Arc::new(ClientRule {
                name: name.to_string(),
                matcher: None,
                tokens: vec![token_digest(token)],
                endpoints: BTreeSet::new(),
                start_task: None,
                namespaces: None,
                namespace_quota: None,
            })
        };
        let mut policy = Policy {
            enabled: true,
            mode: AuthMode::CertificateOrToken,
            clients: vec![rule("a", "tok-a"), rule("b", "tok-b")],
        };
        let anon = Caller::Anonymous;
        let name = |r: Result<Access, Unauthenticated>| r.map(|a| a.name().to_string());
        assert_eq!(
            name(policy.authenticate(&anon, Some("tok-b"), true)),
            Ok("b".into())
        );
        assert_eq!(
            name(policy.authenticate(&anon, Some("tok-c"), true)),
            Err(Unauthenticated::UnknownToken)
        );
        assert_eq!(
            name(policy.authenticate(&anon, Some("tok-a"), false)),
            Err(Unauthenticated::PlainHttp)
        );
        assert_eq!(
            name(policy.authenticate(&anon, None, true)),
            Err(Unauthenticated::Missing)
        );
        policy.mode = AuthMode::Certificate;
        assert_eq!(
            name(policy.authenticate(&anon, Some("tok-a"), true)),
            Err(Unauthenticated::TokensOff)
        );
        // With authentication off a token is still refused over plain HTTP.
        policy.enabled = false;
        assert_eq!(
            name(policy.authenticate(&anon, Some("tok-a"), false)),
            Err(Unauthenticated::PlainHttp)
        );
        assert_eq!(
            name(policy.authenticate(&anon, None, false)),
            Ok("-".into())
        );
        let (token, digest) = new_token().unwrap();
        assert_eq!((token.len(), digest), (68, hex(&token_digest(&token))));
    }
}
