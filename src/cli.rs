//! The command line (clap derive): `serve`, `create`, `key`, `status`,
//! `calc`, `swagger`, `healthcheck`, `export`, `version`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Flags;

/// tsstore: embedded time-series store with a fixed storage footprint.
#[derive(Debug, Parser)]
#[command(name = "tsstore", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (default: $TSSTORE_CONFIG, else ./config.json if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server (REST API).
    Serve(ServeArgs),
    /// Create a store and print its API key (shown once).
    Create(CreateArgs),
    /// Manage store API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show every store under the data path and whether a server runs.
    Status(PathArg),
    /// Storage calculator: capacity and retention of a store shape.
    Calc(CalcArgs),
    /// Serve the OpenAPI description for Swagger Editor on port 21090.
    Swagger(SwaggerArgs),
    /// Ask the local server's GET /health; exit 0 if it answers ok (a
    /// container's HEALTHCHECK: needs no shell or curl).
    Healthcheck(HealthcheckArgs),
    /// Export a store's objects (oldest first) as CSV or NDJSON, reading
    /// its files directly; a store held by a running server is refused
    /// (export it over HTTP: GET /api/stores/STORE/export).
    Export(ExportArgs),
    /// Print the version.
    Version,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Store name.
    pub store: String,
    /// Output format: csv or ndjson.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Start of the range, Unix nanoseconds (default: the oldest object).
    #[arg(long)]
    pub start_time: Option<String>,
    /// End of the range, Unix nanoseconds (default: now).
    #[arg(long)]
    pub end_time: Option<String>,
    /// The range back from now instead (e.g. 1h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// CSV columns to write, in order (e.g. temp,gps.lat).
    #[arg(long)]
    pub fields: Option<String>,
    /// Only objects whose stored bytes contain this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Match --filter ignoring ASCII case.
    #[arg(long)]
    pub filter_ignore_case: bool,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Base directory (default: ./data or TSSTORE_DATA_PATH).
    #[arg(long, alias = "path", value_name = "DIR")]
    pub data_path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Unix socket path.
    #[arg(long, value_name = "PATH", conflicts_with = "no_socket")]
    pub socket: Option<PathBuf>,
    /// Disable the Unix socket.
    #[arg(long)]
    pub no_socket: bool,
    /// Bind address.
    #[arg(long)]
    pub host: Option<String>,
    /// HTTP port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Base path of the stores.
    #[arg(long, value_name = "DIR")]
    pub data_path: Option<PathBuf>,
    /// TLS certificate file (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key file (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Log level: debug or release.
    #[arg(long)]
    pub mode: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Store name: 1 to 64 of A-Z a-z 0-9 _ -.
    pub name: String,
    /// Number of blocks.
    #[arg(long, default_value_t = 1024)]
    pub blocks: u32,
    /// Data block size in bytes (power of 2, at least 64).
    #[arg(long, default_value_t = 4096)]
    pub data_size: u32,
    /// Index block size in bytes (power of 2, at least 64).
    #[arg(long, default_value_t = 4096)]
    pub index_size: u32,
    /// Base directory (default: ./data or TSSTORE_DATA_PATH).
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Data type: binary, text, json, schema.
    #[arg(long = "type", default_value = "json")]
    pub data_type: String,
    /// Durability: always, interval, interval:<ms>, never.
    #[arg(long)]
    pub durability: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Replace every key of a store with one new key.
    Regenerate(KeyStore),
    /// List key ids (never the keys).
    List(KeyStore),
    /// Revoke one key by id.
    Revoke(KeyRevoke),
}

#[derive(Debug, Args)]
pub struct KeyStore {
    pub store: String,
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeyRevoke {
    pub store: String,
    pub key_id: String,
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PathArg {
    /// Base directory (default: ./data or TSSTORE_DATA_PATH).
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CalcArgs {
    /// Number of blocks (omit with --retention to compute it).
    #[arg(long)]
    pub blocks: Option<u32>,
    /// Data block size in bytes.
    #[arg(long, default_value_t = 4096)]
    pub data_size: u32,
    /// Size of one object in bytes.
    #[arg(long, default_value_t = 100)]
    pub object_size: u32,
    /// Inserts per second.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Wanted retention (e.g. 7d, 12h): prints the blocks needed.
    #[arg(long)]
    pub retention: Option<String>,
}

#[derive(Debug, Args)]
pub struct SwaggerArgs {
    /// Port to serve the description on.
    #[arg(long, default_value_t = 21090)]
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Server address (default: the configured bind address; 0.0.0.0 or ::
    /// mean loopback).
    #[arg(long)]
    pub host: Option<String>,
    /// Server port (default: the configured port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Seconds to wait for the answer (1 to 600).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout: u64,
}

impl ServeArgs {
    /// The flags as configuration overrides.
    pub fn flags(&self, config: Option<PathBuf>) -> Flags {
        Flags {
            config,
            host: self.host.clone(),
            port: self.port,
            data_path: self.data_path.clone(),
            socket: self.socket.clone(),
            no_socket: self.no_socket,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            mode: self.mode.clone(),
        }
    }
}
