//! Server configuration and its layering: defaults < `config.json` <
//! environment variables < command-line flags. Validated once, before
//! anything starts; every error names the key at fault.
//!
//! Every key is declared once, in [`KEYS`]: its `config.json` name, its
//! environment variable, and how each layer sets it. The file layer, the
//! environment layer and the unknown-key warning read that table, and a
//! test holds the README's configuration table against it. The keys and
//! variables of the original keep their names (README "Configuration");
//! the others are this server's limits and paths (README "Security").
//! `TSSTORE_ADMIN_KEY_FILE` is the file the admin key is read from when
//! none is configured (the container image sets it; see
//! `commands::admin_key_first_start` for the first start, when it does not
//! exist yet).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

pub use crate::outbound::policy::{OutboundConfig, Rule, DEFAULT_CA_DIR};
use crate::store::Durability;
pub use crate::throttle::AuthLimit;

/// Default HTTP port.
pub const DEFAULT_PORT: u16 = 21080;
/// Default Unix socket path.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/tsstore/tsstore.sock";
/// Shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 20;
/// Default limit of a request body (bytes).
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// Log verbosity (`TSSTORE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Release,
    Debug,
}

/// Default of `server.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The default of `server.max_connections_per_address` for a global cap
/// of `max_connections`: a quarter of it (128 of the default 512), so that
/// one address cannot lock the others out, but never below 16 (or the
/// global cap if that is lower), which a browser on the console with a
/// few streams open stays under.
pub fn default_max_connections_per_address(max_connections: usize) -> usize {
    (max_connections / 4).max(max_connections.min(16))
}
/// Default of `server.header_timeout_seconds`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `server.idle_timeout_seconds` (the original's idle timeout).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Values `server.max_connections` may take.
const CONNECTIONS_RANGE: RangeInclusive<u64> = 1..=1 << 20;
/// Values the limits in seconds may take (`server.header_timeout_seconds`,
/// `server.idle_timeout_seconds`, `server.auth_limit.window_seconds`).
const SECONDS_RANGE: RangeInclusive<u64> = 1..=86_400;
/// Values `server.auth_limit.burst` may take.
const BURST_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// Default of `store.max_future`.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(86_400);

/// TLS certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The validated configuration of `tsstore serve` and the CLI.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub mode: Mode,
    /// `None`: the Unix socket is disabled.
    pub socket_path: Option<PathBuf>,
    pub admin_key: Option<String>,
    /// `TSSTORE_ADMIN_KEY_FILE`: where the admin key is kept when none is
    /// configured otherwise.
    pub admin_key_file: Option<PathBuf>,
    pub tls: Option<TlsFiles>,
    pub base_path: PathBuf,
    pub data_block_size: u32,
    pub index_block_size: u32,
    pub num_blocks: u32,
    pub durability: Durability,
    pub max_body_bytes: usize,
    /// Seconds between pings on an idle WebSocket; a client silent for 2.5
    /// times this is dropped.
    pub ws_ping_seconds: u32,
    pub outbound: OutboundConfig,
    /// Most HTTP connections open at once (WebSocket streams included).
    pub max_connections: usize,
    /// Most of them open at once from one client address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Time a client has to send a whole request head once the server
    /// waits for one (a new connection, or the next request of a
    /// keep-alive connection that started sending it).
    pub header_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long
    /// is closed.
    pub idle_timeout: Duration,
    pub auth_limit: AuthLimit,
    /// How far ahead of the server's clock an explicit timestamp may be.
    pub max_future: Duration,
    /// Keys of the config file that were not recognised (warned about).
    pub unknown_keys: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            host: "0.0.0.0".into(),
            port: DEFAULT_PORT,
            mode: Mode::Release,
            socket_path: Some(PathBuf::from(DEFAULT_SOCKET_PATH)),
            admin_key: None,
            admin_key_file: None,
            tls: None,
            base_path: PathBuf::from("./data"),
            data_block_size: 4096,
            index_block_size: 4096,
            num_blocks: 1024,
            durability: Durability::default(),
            max_body_bytes: DEFAULT_MAX_BODY,
            ws_ping_seconds: 30,
            outbound: OutboundConfig::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: default_max_connections_per_address(
                DEFAULT_MAX_CONNECTIONS,
            ),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            auth_limit: AuthLimit::default(),
            max_future: DEFAULT_MAX_FUTURE,
            unknown_keys: Vec::new(),
        }
    }
}

/// A configuration error: the key at fault and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Overrides given on the command line (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_path: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub no_socket: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub mode: Option<String>,
}

/// What a config key holds; checked before it is used so that a wrong
/// value is reported with its key.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Object,
    Str,
    /// An array of strings.
    StrList,
    /// An unsigned integer up to this maximum.
    Uint(u64),
}

/// The configuration as the layers build it up, with what is combined only
/// once every layer has spoken.
struct Layers {
    c: Config,
    cert: Option<String>,
    key: Option<String>,
    /// Unless set, it follows `max_connections` from wherever that came.
    per_address: Option<usize>,
}

/// Sets a key from `config.json`: its dotted name and its value, never
/// null, of the key's [`Kind`] (checked before).
type FromFile = fn(&mut Layers, &str, &Value) -> Result<(), ConfigError>;
/// Sets a key from its environment variable: its name and its value, set
/// (maybe empty).
type FromEnv = fn(&mut Layers, &str, &str) -> Result<(), ConfigError>;

/// One configuration key, declared once: its dotted name in `config.json`
/// and its environment variable, each with how it sets the configuration.
/// The file layer, the environment layer and the unknown-key warning all
/// read [`KEYS`]; a test holds the README's table against it.
pub struct Key {
    /// Dotted name in `config.json`; `None` for a variable alone.
    pub file: Option<&'static str>,
    /// Environment variable; `None` for a `config.json` key alone.
    pub env: Option<&'static str>,
    kind: Kind,
    from_file: Option<FromFile>,
    from_env: Option<FromEnv>,
}

/// The variable that names the config file (read before the layers).
pub const CONFIG_VAR: &str = "TSSTORE_CONFIG";

/// A string value, `None` if empty.
fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// An integer value (its kind checked the bound already).
fn uint(v: &Value) -> u64 {
    v.as_u64().unwrap_or_default()
}

/// An integer variable in `range`, `None` if empty.
fn env_uint(var: &str, v: &str, range: RangeInclusive<u64>) -> Result<Option<u64>, ConfigError> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(err(
            var,
            format!(
                "invalid value {v:?}: expected an integer from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// A list of outbound rules.
fn rules(key: &str, v: &Value) -> Result<Vec<Rule>, ConfigError> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| s.parse().map_err(|e: String| err(key, e)))
        .collect()
}

/// A string key of both layers, set (through `$wrap`) when not empty.
macro_rules! text_key {
    ($file:literal, $env:literal, $wrap:expr, $($field:ident).+) => {
        Key {
            file: Some($file),
            env: Some($env),
            kind: Kind::Str,
            from_file: Some(|l, _, v| {
                if let Some(v) = text(v) {
                    l.$($field).+ = ($wrap)(v);
                }
                Ok(())
            }),
            from_env: Some(|l, _, v| {
                if !v.is_empty() {
                    l.$($field).+ = ($wrap)(v.to_string());
                }
                Ok(())
            }),
        }
    };
}

/// An integer key of both layers; the variable must be in `$range`.
macro_rules! uint_key {
    ($file:literal, $env:literal, $max:expr, $range:expr, $conv:expr, $($field:ident).+) => {
        Key {
            file: Some($file),
            env: Some($env),
            kind: Kind::Uint($max as u64),
            from_file: Some(|l, _, v| {
                l.$($field).+ = ($conv)(uint(v));
                Ok(())
            }),
            from_env: Some(|l, var, v| {
                if let Some(n) = env_uint(var, v, $range)? {
                    l.$($field).+ = ($conv)(n);
                }
                Ok(())
            }),
        }
    };
}

/// An integer key of `config.json` alone.
macro_rules! file_uint_key {
    ($file:literal, $ty:ty, $($field:ident).+) => {
        Key {
            file: Some($file),
            env: None,
            kind: Kind::Uint(<$ty>::MAX as u64),
            from_file: Some(|l, _, v| {
                l.$($field).+ = uint(v) as $ty;
                Ok(())
            }),
            from_env: None,
        }
    };
}

/// An outbound rule list of `config.json`.
macro_rules! rules_key {
    ($file:literal, $field:ident) => {
        Key {
            file: Some($file),
            env: None,
            kind: Kind::StrList,
            from_file: Some(|l, key, v| {
                l.c.outbound.$field = rules(key, v)?;
                Ok(())
            }),
            from_env: None,
        }
    };
}

pub const KEYS: &[Key] = &[
    text_key!(
        "server.host",
        "TSSTORE_HOST",
        std::convert::identity,
        c.host
    ),
    Key {
        file: Some("server.port"),
        env: Some("TSSTORE_PORT"),
        kind: Kind::Uint(u16::MAX as u64),
        from_file: Some(|l, _, v| {
            l.c.port = uint(v) as u16;
            Ok(())
        }),
        from_env: Some(|l, var, v| {
            if !v.is_empty() {
                l.c.port = parse_port(var, v)?;
            }
            Ok(())
        }),
    },
    Key {
        file: Some("server.mode"),
        env: Some("TSSTORE_MODE"),
        kind: Kind::Str,
        from_file: Some(|l, key, v| {
            if let Some(v) = text(v) {
                l.c.mode = parse_mode(key, &v)?;
            }
            Ok(())
        }),
        from_env: Some(|l, var, v| {
            if !v.is_empty() {
                l.c.mode = parse_mode(var, v)?;
            }
            Ok(())
        }),
    },
    text_key!(
        "store.base_path",
        "TSSTORE_DATA_PATH",
        PathBuf::from,
        c.base_path
    ),
    // Set but empty disables the socket, in either layer.
    Key {
        file: Some("server.socket_path"),
        env: Some("TSSTORE_SOCKET_PATH"),
        kind: Kind::Str,
        from_file: Some(|l, _, v| {
            l.c.socket_path = text(v).map(PathBuf::from);
            Ok(())
        }),
        from_env: Some(|l, _, v| {
            l.c.socket_path = (!v.is_empty()).then(|| PathBuf::from(v));
            Ok(())
        }),
    },
    text_key!("server.admin_key", "TSSTORE_ADMIN_KEY", Some, c.admin_key),
    Key {
        file: None,
        env: Some("TSSTORE_ADMIN_KEY_FILE"),
        kind: Kind::Str,
        from_file: None,
        from_env: Some(|l, _, v| {
            if !v.is_empty() {
                l.c.admin_key_file = Some(PathBuf::from(v));
            }
            Ok(())
        }),
    },
    text_key!("server.tls.cert_file", "TSSTORE_TLS_CERT", Some, cert),
    text_key!("server.tls.key_file", "TSSTORE_TLS_KEY", Some, key),
    Key {
        file: None,
        env: Some(CONFIG_VAR),
        kind: Kind::Str,
        from_file: None,
        // Read before every layer (see `Config::load`).
        from_env: None,
    },
    file_uint_key!("server.max_body_bytes", usize, c.max_body_bytes),
    file_uint_key!("server.ws_ping_seconds", u32, c.ws_ping_seconds),
    Key {
        file: Some("server.outbound.ca_dir"),
        env: None,
        kind: Kind::Str,
        from_file: Some(|l, _, v| {
            if let Some(v) = text(v) {
                l.c.outbound.ca_dir = PathBuf::from(v);
            }
            Ok(())
        }),
        from_env: None,
    },
    rules_key!("server.outbound.allow", allow),
    rules_key!("server.outbound.deny", deny),
    uint_key!(
        "server.max_connections",
        "TSSTORE_MAX_CONNECTIONS",
        1u64 << 20,
        CONNECTIONS_RANGE,
        |n| n as usize,
        c.max_connections
    ),
    uint_key!(
        "server.max_connections_per_address",
        "TSSTORE_MAX_CONNECTIONS_PER_ADDRESS",
        1u64 << 20,
        CONNECTIONS_RANGE,
        |n| Some(n as usize),
        per_address
    ),
    uint_key!(
        "server.header_timeout_seconds",
        "TSSTORE_HEADER_TIMEOUT_SECONDS",
        u32::MAX,
        SECONDS_RANGE,
        Duration::from_secs,
        c.header_timeout
    ),
    uint_key!(
        "server.idle_timeout_seconds",
        "TSSTORE_IDLE_TIMEOUT_SECONDS",
        u32::MAX,
        SECONDS_RANGE,
        Duration::from_secs,
        c.idle_timeout
    ),
    uint_key!(
        "server.auth_limit.window_seconds",
        "TSSTORE_AUTH_LIMIT_WINDOW_SECONDS",
        u32::MAX,
        SECONDS_RANGE,
        Duration::from_secs,
        c.auth_limit.window
    ),
    uint_key!(
        "server.auth_limit.burst",
        "TSSTORE_AUTH_LIMIT_BURST",
        u32::MAX,
        BURST_RANGE,
        |n| n as u32,
        c.auth_limit.burst
    ),
    file_uint_key!("store.data_block_size", u32, c.data_block_size),
    file_uint_key!("store.index_block_size", u32, c.index_block_size),
    file_uint_key!("store.num_blocks", u32, c.num_blocks),
    Key {
        file: Some("store.durability"),
        env: None,
        kind: Kind::Str,
        from_file: Some(|l, key, v| {
            if let Some(v) = text(v) {
                l.c.durability = v
                    .parse()
                    .map_err(|e: crate::store::Error| err(key, e.to_string()))?;
            }
            Ok(())
        }),
        from_env: None,
    },
    Key {
        file: Some("store.max_future"),
        env: Some("TSSTORE_MAX_FUTURE"),
        kind: Kind::Str,
        from_file: Some(|l, key, v| {
            if let Some(v) = text(v) {
                l.c.max_future = crate::duration::parse(&v).map_err(|e| err(key, e))?;
            }
            Ok(())
        }),
        from_env: Some(|l, var, v| {
            if !v.is_empty() {
                l.c.max_future = crate::duration::parse(v).map_err(|e| err(var, e))?;
            }
            Ok(())
        }),
    },
];

/// The kind of `config.json` key `key`: a key of [`KEYS`], or an object
/// holding some; `None` if unknown.
fn kind_of(key: &str) -> Option<Kind> {
    let mut object = false;
    for k in KEYS.iter().filter_map(|k| k.file.map(|f| (f, k.kind))) {
        if k.0 == key {
            return Some(k.1);
        }
        object |=
            k.0.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('.'));
    }
    object.then_some(Kind::Object)
}

/// Collects the unknown keys of `v` and checks the kind of the known ones.
fn collect_keys(prefix: &str, v: &Value, out: &mut Vec<String>) -> Result<(), ConfigError> {
    if let Value::Object(m) = v {
        for (k, v) in m {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match kind_of(&key) {
                None => out.push(key),
                Some(kind) => {
                    check_kind(&key, kind, v)?;
                    collect_keys(&key, v, out)?;
                }
            }
        }
    }
    Ok(())
}

/// The value of dotted key `key` in `root`, unless absent or null.
fn lookup<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.')
        .try_fold(root, |v, part| v.get(part))
        .filter(|v| !v.is_null())
}

fn check_kind(key: &str, kind: Kind, v: &Value) -> Result<(), ConfigError> {
    let ok = match kind {
        Kind::Object => v.is_object(),
        Kind::Str => v.is_string() || v.is_null(),
        Kind::StrList => {
            v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        }
        Kind::Uint(max) => v.is_null() || v.as_u64().is_some_and(|n| n <= max),
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        Kind::Object => "an object".to_string(),
        Kind::Str => "a string".to_string(),
        Kind::StrList => "an array of strings".to_string(),
        Kind::Uint(max) => format!("an integer from 0 to {max}"),
    };
    Err(err(key, format!("invalid value {v}: expected {expected}")))
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl Config {
    /// Loads the configuration: `config.json` (from `flags.config`, else
    /// `TSSTORE_CONFIG`, else `./config.json` if present), then the
    /// environment `env`, then the flags. Does not check the admin key:
    /// see [`Config::validate_for_serve`].
    pub fn load(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = flags
            .config
            .clone()
            .or_else(|| non_empty(env(CONFIG_VAR)).map(PathBuf::from));
        let (file, unknown) = match &path {
            Some(p) => read_file(p)?,
            None if Path::new("config.json").is_file() => read_file(Path::new("config.json"))?,
            None => (Value::Null, Vec::new()),
        };
        let mut l = Layers {
            c: Config {
                unknown_keys: unknown,
                ..Config::default()
            },
            cert: None,
            key: None,
            per_address: None,
        };
        // The file, then the environment.
        for k in KEYS {
            if let (Some(key), Some(set)) = (k.file, k.from_file) {
                if let Some(v) = lookup(&file, key) {
                    set(&mut l, key, v)?;
                }
            }
        }
        for k in KEYS {
            if let (Some(var), Some(set)) = (k.env, k.from_env) {
                if let Some(v) = env(var) {
                    set(&mut l, var, &v)?;
                }
            }
        }
        let Layers {
            mut c,
            mut cert,
            mut key,
            per_address,
        } = l;
        c.max_connections_per_address =
            per_address.unwrap_or_else(|| default_max_connections_per_address(c.max_connections));

        // The flags.
        if let Some(v) = &flags.host {
            c.host = v.clone();
        }
        if let Some(v) = flags.port {
            c.port = v;
        }
        if let Some(v) = &flags.data_path {
            c.base_path = v.clone();
        }
        if let Some(v) = &flags.socket {
            c.socket_path = Some(v.clone());
        }
        if flags.no_socket {
            c.socket_path = None;
        }
        if let Some(v) = &flags.tls_cert {
            cert = Some(v.to_string_lossy().into_owned());
        }
        if let Some(v) = &flags.tls_key {
            key = Some(v.to_string_lossy().into_owned());
        }
        if let Some(v) = &flags.mode {
            c.mode = parse_mode("--mode", v)?;
        }

        c.tls =
            match (cert, key) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert_file: cert.into(),
                    key_file: key.into(),
                }),
                _ => return Err(err(
                    "server.tls",
                    "TLS requires both cert and key: set both TSSTORE_TLS_CERT and TSSTORE_TLS_KEY",
                )),
            };
        // The key file only stands in for a key configured nowhere else.
        if c.admin_key.is_none() {
            if let Some(p) = &c.admin_key_file {
                c.admin_key = read_admin_key_file(p)?;
            }
        }
        c.validate_store_defaults()?;
        Ok(c)
    }

    fn validate_store_defaults(&self) -> Result<(), ConfigError> {
        let cfg = crate::store::Config {
            num_blocks: self.num_blocks,
            data_block_size: self.data_block_size,
            index_block_size: self.index_block_size,
            ..crate::store::Config::default()
        };
        cfg.validate().map_err(|e| err("store", e.to_string()))?;
        if self.max_body_bytes < 1024 {
            return Err(err("server.max_body_bytes", "must be at least 1024"));
        }
        if !(1..=3600).contains(&self.ws_ping_seconds) {
            return Err(err("server.ws_ping_seconds", "must be from 1 to 3600"));
        }
        let in_range = |key: &str, range: RangeInclusive<u64>, v: u64| {
            if range.contains(&v) {
                return Ok(());
            }
            let (lo, hi) = range.into_inner();
            Err(err(key, format!("must be from {lo} to {hi}")))
        };
        for (key, v) in [
            ("server.max_connections", self.max_connections),
            (
                "server.max_connections_per_address",
                self.max_connections_per_address,
            ),
        ] {
            in_range(key, CONNECTIONS_RANGE, v as u64)?;
        }
        for (key, v) in [
            ("server.header_timeout_seconds", self.header_timeout),
            ("server.idle_timeout_seconds", self.idle_timeout),
            ("server.auth_limit.window_seconds", self.auth_limit.window),
        ] {
            in_range(key, SECONDS_RANGE, v.as_secs())?;
        }
        in_range(
            "server.auth_limit.burst",
            BURST_RANGE,
            self.auth_limit.burst.into(),
        )?;
        Ok(())
    }

    /// The checks `serve` adds: an admin key of at least 20 characters and
    /// readable TLS files.
    pub fn validate_for_serve(&self) -> Result<(), ConfigError> {
        match &self.admin_key {
            None => {
                return Err(err(
                    "server.admin_key",
                    "Admin key required: set TSSTORE_ADMIN_KEY environment variable or admin_key in config",
                ))
            }
            Some(k) if k.chars().count() < MIN_ADMIN_KEY_LEN => {
                return Err(err(
                    "server.admin_key",
                    format!("Admin key must be at least {MIN_ADMIN_KEY_LEN} characters"),
                ))
            }
            Some(_) => {}
        }
        if let Some(t) = &self.tls {
            if !t.cert_file.is_file() {
                return Err(err(
                    "server.tls.cert_file",
                    format!("TLS certificate file not found: {}", t.cert_file.display()),
                ));
            }
            if !t.key_file.is_file() {
                return Err(err(
                    "server.tls.key_file",
                    format!("TLS key file not found: {}", t.key_file.display()),
                ));
            }
        }
        Ok(())
    }

    /// The store configuration new stores get unless a request says otherwise.
    pub fn store_defaults(&self) -> crate::store::Config {
        crate::store::Config {
            num_blocks: self.num_blocks,
            data_block_size: self.data_block_size,
            index_block_size: self.index_block_size,
            durability: self.durability,
            ..crate::store::Config::default()
        }
    }
}

/// The admin key kept in `path` (`TSSTORE_ADMIN_KEY_FILE`), surrounding
/// white space removed; `None` while the file does not exist.
pub fn read_admin_key_file(path: &Path) -> Result<Option<String>, ConfigError> {
    let key = "TSSTORE_ADMIN_KEY_FILE";
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().chars().count() >= MIN_ADMIN_KEY_LEN => {
            Ok(Some(text.trim().to_string()))
        }
        Ok(_) => Err(err(
            key,
            format!(
                "{} holds no admin key of at least {MIN_ADMIN_KEY_LEN} characters: write one into it, or delete it and `tsstore serve` generates one",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(key, format!("cannot read {}: {e}", path.display()))),
    }
}

fn read_file(p: &Path) -> Result<(Value, Vec<String>), ConfigError> {
    let failed = |e: &dyn std::fmt::Display| {
        err(
            CONFIG_VAR,
            format!("Failed to load config {}: {e}", p.display()),
        )
    };
    let text = std::fs::read_to_string(p).map_err(|e| failed(&e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| failed(&e))?;
    if !v.is_object() {
        return Err(failed(&format!("invalid type: {v}, expected an object")));
    }
    let mut unknown = Vec::new();
    collect_keys("", &v, &mut unknown)?;
    // The same order whether or not serde_json preserves the file's order.
    unknown.sort();
    Ok((v, unknown))
}

fn parse_port(key: &str, v: &str) -> Result<u16, ConfigError> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(err(key, format!("invalid port {v:?}: expected 1 to 65535"))),
    }
}

fn parse_mode(key: &str, v: &str) -> Result<Mode, ConfigError> {
    match v {
        "release" => Ok(Mode::Release),
        "debug" => Ok(Mode::Debug),
        _ => Err(err(
            key,
            format!("invalid mode {v:?}: expected debug or release"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    /// The backticked names of a README cell (`a`, `b` -> a, b).
    fn ticked(cell: &str) -> Vec<&str> {
        cell.split('`').skip(1).step_by(2).collect()
    }

    /// `server.{a,b.c}` -> server.a, server.b.c.
    fn expand(name: &str) -> Vec<String> {
        match name.split_once('{') {
            None => vec![name.to_string()],
            Some((prefix, rest)) => rest
                .trim_end_matches('}')
                .split(',')
                .map(|item| format!("{prefix}{item}"))
                .collect(),
        }
    }

    /// The README's configuration table and `config.json` key list name
    /// exactly the keys of [`KEYS`], and a variable the table pairs with a
    /// `config.json` key is that key's variable.
    #[test]
    fn the_readme_documents_exactly_the_declared_keys() {
        use std::collections::BTreeSet;
        let readme = include_str!("../README.md");
        let start = readme
            .find("Configuration comes from `config.json`")
            .expect("the README's configuration section");
        let len = readme[start..]
            .find("an unknown key is warned about")
            .expect("the end of the README's configuration section");
        let section = &readme[start..start + len];
        let mut vars = BTreeSet::new();
        for row in section.lines().filter(|l| l.starts_with("| `TSSTORE_")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let row_vars = ticked(cells[0]);
            let row_keys: Vec<String> = ticked(cells[cells.len() - 1])
                .into_iter()
                .filter(|n| n.starts_with("server.") || n.starts_with("store."))
                .flat_map(expand)
                .collect();
            if !row_keys.is_empty() {
                assert_eq!(row_vars.len(), row_keys.len(), "{row}");
                for (var, key) in row_vars.iter().zip(&row_keys) {
                    assert!(
                        KEYS.iter()
                            .any(|k| k.env == Some(*var) && k.file == Some(key.as_str())),
                        "the README pairs {var} with {key}; KEYS does not"
                    );
                }
            }
            vars.extend(row_vars.into_iter().map(str::to_string));
        }
        let declared: BTreeSet<String> = KEYS
            .iter()
            .filter_map(|k| k.env)
            .map(str::to_string)
            .collect();
        assert_eq!(vars, declared, "variables: README table vs KEYS");
        let list = &section[section
            .find("`config.json` takes the keys")
            .expect("the README's list of config.json keys")..];
        let files: BTreeSet<String> = ticked(list)
            .into_iter()
            .filter(|n| n.starts_with("server.") || n.starts_with("store."))
            .flat_map(expand)
            .collect();
        let declared: BTreeSet<String> = KEYS
            .iter()
            .filter_map(|k| k.file)
            .map(str::to_string)
            .collect();
        assert_eq!(files, declared, "config.json keys: README vs KEYS");
    }

    /// Flags naming `dir/c.json` as the config file, and its path.
    fn config_in(dir: &tempfile::TempDir) -> (PathBuf, Flags) {
        let file = dir.path().join("c.json");
        let flags = Flags {
            config: Some(file.clone()),
            ..Flags::default()
        };
        (file, flags)
    }

    /// Each config text is refused, naming its key.
    fn assert_refused(flags: &Flags, cases: &[(&str, &str)]) {
        for (text, key) in cases {
            std::fs::write(flags.config.as_ref().unwrap(), text).unwrap();
            let e = Config::load(flags, &env_of(&[])).unwrap_err();
            assert_eq!(&e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn defaults_file_env_flags_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(
            &file,
            r#"{"server":{"host":"127.0.0.1","port":9000,"admin_key":"from-file-0123456789","colour":"red"},
                "store":{"base_path":"/srv/ts","num_blocks":64},"extra":1}"#,
        )
        .unwrap();
        let flags = Flags {
            config: Some(file.clone()),
            ..Flags::default()
        };
        let c = Config::load(&flags, &env_of(&[])).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.num_blocks),
            ("127.0.0.1", 9000, 64)
        );
        assert_eq!(c.base_path, PathBuf::from("/srv/ts"));
        assert_eq!(c.unknown_keys, ["extra", "server.colour"]);
        let env = env_of(&[("TSSTORE_PORT", "9100"), ("TSSTORE_DATA_PATH", "/env")]);
        let c = Config::load(&flags, &env).unwrap();
        assert_eq!((c.port, c.base_path.as_path()), (9100, Path::new("/env")));
        let flags = Flags {
            port: Some(9200),
            no_socket: true,
            ..flags
        };
        let c = Config::load(&flags, &env).unwrap();
        assert_eq!((c.port, c.socket_path), (9200, None));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = Config::load(&Flags::default(), &env_of(&[("TSSTORE_PORT", "http")])).unwrap_err();
        assert_eq!(e.key, "TSSTORE_PORT");
        let e = Config::load(&Flags::default(), &env_of(&[("TSSTORE_MODE", "loud")])).unwrap_err();
        assert_eq!(e.key, "TSSTORE_MODE");
        let e =
            Config::load(&Flags::default(), &env_of(&[("TSSTORE_TLS_CERT", "c.pem")])).unwrap_err();
        assert!(e.reason.contains("both cert and key"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.json");
        std::fs::write(&file, r#"{"store":{"data_block_size":1000}}"#).unwrap();
        let flags = Flags {
            config: Some(file),
            ..Flags::default()
        };
        let e = Config::load(&flags, &env_of(&[])).unwrap_err();
        assert!(e.reason.contains("data_block_size"), "{e}");
        // A value of the wrong type names its key (serde's message does not).
        assert_refused(
            &flags,
            &[
                (r#"{"server":{"port":"abc"}}"#, "server.port"),
                (r#"{"server":{"port":70000}}"#, "server.port"),
                (
                    r#"{"server":{"tls":{"cert_file":1}}}"#,
                    "server.tls.cert_file",
                ),
                (r#"{"store":{"num_blocks":-1}}"#, "store.num_blocks"),
                (r#"{"store":[]}"#, "store"),
            ],
        );
    }

    #[test]
    fn the_outbound_policy_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (file, flags) = config_in(&dir);
        let c = Config::load(&Flags::default(), &env_of(&[])).unwrap();
        assert_eq!(c.outbound, OutboundConfig::default());
        assert_eq!(c.outbound.ca_dir, Path::new("/etc/tsstore/ca"));
        std::fs::write(
            &file,
            r#"{"server":{"outbound":{"ca_dir":"/srv/ca","allow":["192.168.1.20:21080","10.0.0.0/8"],"deny":[":22"]}}}"#,
        )
        .unwrap();
        let c = Config::load(&flags, &env_of(&[])).unwrap();
        assert_eq!(c.outbound.ca_dir, Path::new("/srv/ca"));
        assert_eq!(c.outbound.allow.len(), 2);
        assert_eq!(c.outbound.deny, [":22".parse::<Rule>().unwrap()]);
        assert_refused(
            &flags,
            &[
                (
                    r#"{"server":{"outbound":{"allow":["10.0.0.0/99"]}}}"#,
                    "server.outbound.allow",
                ),
                (
                    r#"{"server":{"outbound":{"deny":"10.0.0.1"}}}"#,
                    "server.outbound.deny",
                ),
                (
                    r#"{"server":{"outbound":{"deny":[1]}}}"#,
                    "server.outbound.deny",
                ),
                (r#"{"server":{"outbound":[]}}"#, "server.outbound"),
            ],
        );
    }

    #[test]
    fn the_limit_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (file, flags) = config_in(&dir);
        let c = Config::load(&Flags::default(), &env_of(&[])).unwrap();
        assert_eq!(
            (c.max_connections, c.header_timeout, c.idle_timeout),
            (512, Duration::from_secs(10), Duration::from_secs(60))
        );
        assert_eq!(
            (c.auth_limit.burst, c.auth_limit.window),
            (10, Duration::from_secs(10))
        );
        assert_eq!(c.max_future, Duration::from_secs(86_400));
        assert_eq!(c.max_connections_per_address, 128);
        std::fs::write(
            &file,
            r#"{"server":{"max_connections":64,"header_timeout_seconds":2,"idle_timeout_seconds":5,
                "auth_limit":{"burst":3,"window_seconds":30}},"store":{"max_future":"1h30m"}}"#,
        )
        .unwrap();
        let c = Config::load(&flags, &env_of(&[])).unwrap();
        assert_eq!(c.max_connections, 64);
        // Not set: it follows the global cap.
        assert_eq!(c.max_connections_per_address, 16);
        for (global, per_address) in [(1, 1), (8, 8), (16, 16), (200, 50), (4096, 1024)] {
            assert_eq!(
                default_max_connections_per_address(global),
                per_address,
                "{global}"
            );
        }
        assert_eq!(c.header_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.auth_limit.burst, 3);
        assert_eq!(c.auth_limit.window, Duration::from_secs(30));
        assert_eq!(c.max_future, Duration::from_secs(5400));
        assert_refused(
            &flags,
            &[
                (
                    r#"{"server":{"max_connections":0}}"#,
                    "server.max_connections",
                ),
                (
                    r#"{"server":{"max_connections":-1}}"#,
                    "server.max_connections",
                ),
                (
                    r#"{"server":{"max_connections_per_address":0}}"#,
                    "server.max_connections_per_address",
                ),
                (
                    r#"{"server":{"max_connections_per_address":"8"}}"#,
                    "server.max_connections_per_address",
                ),
                (
                    r#"{"server":{"header_timeout_seconds":0}}"#,
                    "server.header_timeout_seconds",
                ),
                (
                    r#"{"server":{"idle_timeout_seconds":100000}}"#,
                    "server.idle_timeout_seconds",
                ),
                (
                    r#"{"server":{"auth_limit":{"burst":0}}}"#,
                    "server.auth_limit.burst",
                ),
                (
                    r#"{"server":{"auth_limit":{"window_seconds":"10"}}}"#,
                    "server.auth_limit.window_seconds",
                ),
                (r#"{"server":{"auth_limit":5}}"#, "server.auth_limit"),
                (r#"{"store":{"max_future":"soon"}}"#, "store.max_future"),
                (r#"{"store":{"max_future":"-1h"}}"#, "store.max_future"),
                (r#"{"store":{"max_future":3600}}"#, "store.max_future"),
            ],
        );
    }

    #[test]
    fn the_limit_variables_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (file, flags) = config_in(&dir);
        std::fs::write(
            &file,
            r#"{"server":{"max_connections":64,"header_timeout_seconds":2,"idle_timeout_seconds":5,
                "auth_limit":{"burst":3,"window_seconds":30}},"store":{"max_future":"1h"}}"#,
        )
        .unwrap();
        let vars = [
            ("TSSTORE_MAX_CONNECTIONS", "100"),
            ("TSSTORE_HEADER_TIMEOUT_SECONDS", "7"),
            ("TSSTORE_IDLE_TIMEOUT_SECONDS", "90"),
            ("TSSTORE_AUTH_LIMIT_BURST", "20"),
            ("TSSTORE_AUTH_LIMIT_WINDOW_SECONDS", "60"),
            ("TSSTORE_MAX_FUTURE", "2d"),
        ];
        let c = Config::load(&flags, &env_of(&vars)).unwrap();
        assert_eq!(c.max_connections, 100);
        assert_eq!(c.header_timeout, Duration::from_secs(7));
        assert_eq!(c.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.auth_limit.burst, 20);
        assert_eq!(c.auth_limit.window, Duration::from_secs(60));
        assert_eq!(c.max_future, Duration::from_secs(2 * 86_400));
        // Not set: it follows the global cap, here the variable's.
        let c = Config::load(&flags, &env_of(&[("TSSTORE_MAX_CONNECTIONS", "400")])).unwrap();
        assert_eq!(c.max_connections_per_address, 100);
        let c = Config::load(
            &flags,
            &env_of(&[("TSSTORE_MAX_CONNECTIONS_PER_ADDRESS", "3")]),
        )
        .unwrap();
        assert_eq!((c.max_connections, c.max_connections_per_address), (64, 3));
        std::fs::write(
            &file,
            r#"{"server":{"max_connections":64,"max_connections_per_address":5}}"#,
        )
        .unwrap();
        let c = Config::load(&flags, &env_of(&[])).unwrap();
        assert_eq!(c.max_connections_per_address, 5);
        let c = Config::load(
            &flags,
            &env_of(&[("TSSTORE_MAX_CONNECTIONS_PER_ADDRESS", "7")]),
        )
        .unwrap();
        assert_eq!(c.max_connections_per_address, 7);
        // Set but empty: the file's value.
        let c = Config::load(&flags, &env_of(&[("TSSTORE_MAX_CONNECTIONS", "")])).unwrap();
        assert_eq!(c.max_connections, 64);
        for (var, value) in [
            ("TSSTORE_MAX_CONNECTIONS", "0"),
            ("TSSTORE_MAX_CONNECTIONS", "many"),
            ("TSSTORE_MAX_CONNECTIONS_PER_ADDRESS", "0"),
            ("TSSTORE_MAX_CONNECTIONS_PER_ADDRESS", "1048577"),
            ("TSSTORE_HEADER_TIMEOUT_SECONDS", "-1"),
            ("TSSTORE_IDLE_TIMEOUT_SECONDS", "86401"),
            ("TSSTORE_AUTH_LIMIT_BURST", "1000001"),
            ("TSSTORE_AUTH_LIMIT_WINDOW_SECONDS", "10s"),
            ("TSSTORE_MAX_FUTURE", "0s"),
        ] {
            let e = Config::load(&flags, &env_of(&[(var, value)])).unwrap_err();
            assert_eq!(e.key, var, "{value}: {e}");
        }
    }

    #[test]
    fn the_admin_key_file_stands_in_only_for_a_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin_key");
        let var = file.to_str().unwrap();
        // Not there yet: no key (serve generates one).
        let c = Config::load(
            &Flags::default(),
            &env_of(&[("TSSTORE_ADMIN_KEY_FILE", var)]),
        )
        .unwrap();
        assert_eq!(
            (c.admin_key, c.admin_key_file.as_deref()),
            (None, Some(file.as_path()))
        );
        std::fs::write(&file, "\n  key-from-the-file-0123456789\t\n").unwrap();
        let c = Config::load(
            &Flags::default(),
            &env_of(&[("TSSTORE_ADMIN_KEY_FILE", var)]),
        )
        .unwrap();
        assert_eq!(c.admin_key.as_deref(), Some("key-from-the-file-0123456789"));
        let env = env_of(&[
            ("TSSTORE_ADMIN_KEY_FILE", var),
            ("TSSTORE_ADMIN_KEY", "key-from-the-environment"),
        ]);
        let c = Config::load(&Flags::default(), &env).unwrap();
        assert_eq!(c.admin_key.as_deref(), Some("key-from-the-environment"));
        // A configured key wins even over a key file that is unusable.
        std::fs::write(&file, "short").unwrap();
        assert!(Config::load(&Flags::default(), &env).is_ok());
        let e = Config::load(
            &Flags::default(),
            &env_of(&[("TSSTORE_ADMIN_KEY_FILE", var)]),
        )
        .unwrap_err();
        assert_eq!(e.key, "TSSTORE_ADMIN_KEY_FILE");
    }

    #[test]
    fn serve_needs_a_long_admin_key() {
        let c = Config::load(&Flags::default(), &env_of(&[])).unwrap();
        assert!(c
            .validate_for_serve()
            .unwrap_err()
            .reason
            .contains("Admin key required"));
        let c = Config::load(
            &Flags::default(),
            &env_of(&[("TSSTORE_ADMIN_KEY", "short")]),
        )
        .unwrap();
        assert_eq!(
            c.validate_for_serve().unwrap_err().reason,
            "Admin key must be at least 20 characters"
        );
        let c = Config::load(
            &Flags::default(),
            &env_of(&[("TSSTORE_ADMIN_KEY", "0123456789abcdefghij")]),
        )
        .unwrap();
        c.validate_for_serve().unwrap();
        let c = Config::load(&Flags::default(), &env_of(&[("TSSTORE_SOCKET_PATH", "")])).unwrap();
        assert_eq!(c.socket_path, None);
    }
}
