//! A path-tracking reader over a parsed YAML document.
//!
//! Butler's config files carry hundreds of keys for features butler-edge does not
//! have. The reader lets each section pull out exactly the keys it honours, by their
//! dotted path, and turns a wrong value into an error that names the key path, the
//! value found and what was expected. It remembers every path it was asked for, so
//! the keys nobody asked for can be listed (at debug level) instead of rejected.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// A configuration value that is present but wrong, or a file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: expected {expected}, found {found}")]
    Invalid {
        path: String,
        expected: String,
        found: String,
    },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {message}")]
    Syntax { path: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl ConfigError {
    pub fn invalid(path: &str, expected: impl Into<String>, found: &Value) -> Self {
        ConfigError::Invalid {
            path: path.to_string(),
            expected: expected.into(),
            found: describe(found),
        }
    }
}

/// How a value is shown in an error: scalars as they were written, quoted.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".to_string(),
        Value::Bool(b) => format!("\"{b}\""),
        Value::Number(n) => format!("\"{n}\""),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

pub struct Reader<'a> {
    root: &'a Value,
    asked: RefCell<BTreeSet<String>>,
}

impl<'a> Reader<'a> {
    pub fn new(root: &'a Value) -> Self {
        Reader {
            root,
            asked: RefCell::new(BTreeSet::new()),
        }
    }

    /// The value at a dotted path; `None` when absent or null (YAML `key:` with
    /// nothing after it, which Butler's template uses for empty lists).
    pub fn get(&self, path: &str) -> Option<&'a Value> {
        self.asked.borrow_mut().insert(path.to_string());
        let mut node = self.root;
        for segment in path.split('.') {
            node = node.as_object()?.get(segment)?;
        }
        if node.is_null() { None } else { Some(node) }
    }

    pub fn bool(&self, path: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(path) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" => Ok(true),
            Some(Value::String(s)) if s == "false" => Ok(false),
            Some(other) => Err(ConfigError::invalid(path, "true or false", other)),
        }
    }

    pub fn string(&self, path: &str) -> Result<Option<String>, ConfigError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(ConfigError::invalid(path, "a text value", other)),
        }
    }

    pub fn string_or(&self, path: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.string(path)?.unwrap_or_else(|| default.to_string()))
    }

    /// A whole number in `min..=max`; numeric strings are accepted because
    /// Butler's config library reads environment overrides as strings.
    pub fn integer(&self, path: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.get(path) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ConfigError::invalid(
                path,
                format!("a whole number {min}-{max}"),
                value,
            )),
        }
    }

    pub fn integer_or(
        &self,
        path: &str,
        min: u64,
        max: u64,
        default: u64,
    ) -> Result<u64, ConfigError> {
        Ok(self.integer(path, min, max)?.unwrap_or(default))
    }

    pub fn port(&self, path: &str, default: u16) -> Result<u16, ConfigError> {
        let Some(value) = self.get(path) else {
            return Ok(default);
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(ConfigError::invalid(path, "a port 1-65535", value)),
        }
    }

    pub fn path(&self, path: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(path)?.map(PathBuf::from))
    }

    /// A list of text values; absent or null is the empty list.
    pub fn string_list(&self, path: &str) -> Result<Vec<String>, ConfigError> {
        match self.get(path) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter(|(_, item)| !item.is_null())
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(ConfigError::invalid(
                        &format!("{path}[{i}]"),
                        "a text value",
                        other,
                    )),
                })
                .collect(),
            Some(other) => Err(ConfigError::invalid(path, "a list", other)),
        }
    }

    /// The items of a list of mappings, for sections like
    /// `headers.static: [{name, value}]`; absent or null is the empty list.
    pub fn list(&self, path: &str) -> Result<Vec<&'a Value>, ConfigError> {
        match self.get(path) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.iter().filter(|i| !i.is_null()).collect()),
            Some(other) => Err(ConfigError::invalid(path, "a list", other)),
        }
    }

    /// Every leaf path in the document that no section asked for (nor any parent
    /// of it), for the debug listing of ignored keys.
    pub fn unread_paths(&self) -> Vec<String> {
        let asked = self.asked.borrow();
        let mut out = Vec::new();
        collect_unread(self.root, String::new(), &asked, &mut out);
        out
    }
}

fn collect_unread(node: &Value, path: String, asked: &BTreeSet<String>, out: &mut Vec<String>) {
    if !path.is_empty() && asked.contains(&path) {
        return;
    }
    match node {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect_unread(child, child_path, asked, out);
            }
        }
        _ => out.push(path),
    }
}
