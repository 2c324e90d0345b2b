//! The CLI commands other than `serve`: create, key, status, calc,
//! swagger and healthcheck; and the admin key of a first start, which
//! `serve` generates when none is configured and `TSSTORE_ADMIN_KEY_FILE`
//! names a file that does not exist yet. Output formats follow the
//! original's.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::{CalcArgs, CreateArgs, ExportArgs, HealthcheckArgs, KeyCommand, SwaggerArgs};
use crate::config::{self, Config};
use crate::keys::{self, KeyError};
use crate::probe;
use crate::registry;
use crate::store::{self, DataType};
use crate::units::{capacity, human_bytes, human_duration, per_block};

fn base(config: &Config, path: &Option<PathBuf>) -> PathBuf {
    path.clone().unwrap_or_else(|| config.base_path.clone())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `tsstore create`.
pub fn create(config: &Config, a: &CreateArgs, out: &mut dyn Write) -> Result<()> {
    let base = base(config, &a.path);
    let data_type: DataType = a.data_type.parse().map_err(|_| {
        anyhow::anyhow!(
            "Failed to create store: invalid data type: must be binary, text, json, or schema"
        )
    })?;
    let mut cfg = store::Config {
        num_blocks: a.blocks,
        data_block_size: a.data_size,
        index_block_size: a.index_size,
        data_type,
        durability: config.durability,
    };
    if let Some(d) = &a.durability {
        cfg.durability = d
            .parse()
            .map_err(|e| anyhow::anyhow!("Failed to create store: {e}"))?;
    }
    std::fs::create_dir_all(&base)
        .with_context(|| format!("Failed to create data directory {}", base.display()))?;
    let (s, key) = crate::registry::create_store(&store::fs::RealFs, &base, &a.name, cfg)
        .map_err(|e| anyhow::anyhow!("Failed to create store: {e}"))?;
    s.close().context("Failed to create store")?;
    writeln!(
        out,
        "=== STORE CREATED ===\nName:        {}\nPath:        {}/{}\nData Type:   {}\nBlocks:      {}\nData Size:   {} bytes\nIndex Size:  {} bytes\n\nKey ID:      {}\nAPI Key:     {}\n\nWARNING: The API key is shown only once. Save it securely!",
        a.name,
        path_str(&base),
        a.name,
        data_type,
        a.blocks,
        a.data_size,
        a.index_size,
        key.key_id,
        key.api_key
    )?;
    Ok(())
}

fn store_dir(config: &Config, path: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    store::validate_name(name)?;
    let base = base(config, path);
    if !store::exists(&base, name) {
        bail!("store not found: {}", base.join(name).display());
    }
    Ok(base.join(name))
}

/// `tsstore key ...`.
pub fn key(config: &Config, cmd: &KeyCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        KeyCommand::Regenerate(k) => {
            let dir = store_dir(config, &k.path, &k.store).context("Failed to regenerate key")?;
            let nk = keys::regenerate(&dir, &k.store, "Regenerated via CLI")
                .context("Failed to regenerate key")?;
            writeln!(
                out,
                "=== NEW API KEY ===\nStore:   {}\nKey ID:  {}\nAPI Key: {}\n\nWARNING: This key is shown only once. Save it securely!\nAll previous keys have been revoked.",
                k.store, nk.key_id, nk.api_key
            )?;
        }
        KeyCommand::List(k) => {
            let dir = store_dir(config, &k.path, &k.store).context("Failed to list keys")?;
            let file = keys::load(&dir, &k.store).context("Failed to list keys")?;
            if file.keys.is_empty() {
                writeln!(out, "No API keys found for store '{}'", k.store)?;
                return Ok(());
            }
            writeln!(out, "API keys for store '{}':", k.store)?;
            writeln!(out, "{:<8}  {:<25}  Note", "ID", "Created")?;
            writeln!(out, "--------  -------------------------  ----")?;
            for e in &file.keys {
                let created = crate::clock::parse_rfc3339(&e.created_at)
                    .map(crate::clock::human)
                    .unwrap_or_else(|| e.created_at.clone());
                writeln!(out, "{:<8}  {:<25}  {}", e.id, created, e.note)?;
            }
        }
        KeyCommand::Revoke(k) => {
            let dir = store_dir(config, &k.path, &k.store).context("Failed to revoke key")?;
            match keys::revoke(&dir, &k.store, &k.key_id) {
                Ok(()) => writeln!(out, "Key '{}' revoked for store '{}'", k.key_id, k.store)?,
                Err(KeyError::NotFound) => bail!("Failed to revoke key: API key not found"),
                Err(e) => return Err(anyhow::Error::new(e).context("Failed to revoke key")),
            }
        }
    }
    Ok(())
}

/// `tsstore status`.
pub fn status(config: &Config, path: &Option<PathBuf>, out: &mut dyn Write) -> Result<()> {
    let base = base(config, path);
    let mut names: Vec<String> = std::fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| store::exists(&base, n))
        .collect();
    names.sort();
    let server = crate::registry::running_server(&base);
    writeln!(out, "Data path: {}", base.display())?;
    if names.is_empty() {
        writeln!(out, "No stores.")?;
        writeln!(out, "{}", server_line(&server, false))?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<7} {:>10} {:>6} {:>10}  {:<20}  {:<20}  server",
        "STORE", "TYPE", "SIZE", "FILL", "OBJECTS", "OLDEST", "NEWEST"
    )?;
    let mut any_running = false;
    let row = |out: &mut dyn Write, n: &str, st: &store::Stats, held: bool| -> Result<()> {
        let fill = 100.0 * st.active_blocks as f64 / st.num_blocks.max(1) as f64;
        let t = |ns: i64| {
            if ns == 0 {
                "-".to_string()
            } else {
                crate::clock::rfc3339_secs(ns)
            }
        };
        writeln!(
            out,
            "{:<24} {:<7} {:>10} {:>5.1}% {:>10}  {:<20}  {:<20}  {}",
            n,
            st.data_type.as_str(),
            human_bytes(st.footprint_bytes),
            fill,
            st.object_count,
            t(st.oldest_timestamp),
            t(st.newest_timestamp),
            if held { "yes" } else { "no" }
        )?;
        Ok(())
    };
    for n in &names {
        match registry::open_offline(&base, n) {
            Ok(s) => {
                row(out, n, &s.stats()?, false)?;
                s.close()?;
            }
            Err(registry::Error::Locked { .. }) => {
                any_running = true;
                match server_stats(config, server.as_deref(), n) {
                    Ok(st) => row(out, n, &st, true)?,
                    Err(why) => writeln!(
                        out,
                        "{n:<24} (open in a running server; {why})                          yes"
                    )?,
                }
            }
            Err(e) => writeln!(out, "{n:<24} error: {e}")?,
        }
    }
    writeln!(out, "{}", server_line(&server, any_running))?;
    Ok(())
}

/// Stats of a store held by the running server, asked over its REST API
/// with the admin key (the store's files are locked by the server). The
/// reason they cannot be had otherwise.
fn server_stats(config: &Config, lock: Option<&str>, name: &str) -> Result<store::Stats, String> {
    let Some(key) = config.admin_key.as_deref().filter(|k| !k.is_empty()) else {
        return Err("set TSSTORE_ADMIN_KEY to see its stats".into());
    };
    // probe::get does not verify a certificate: no admin key over HTTPS.
    if config.tls.is_some() {
        return Err("stats over HTTPS are not fetched".into());
    }
    let addr = lock
        .and_then(|l| l.rsplit(", ").next())
        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
        .ok_or("server address unknown")?;
    let r = probe::get(
        probe::reachable(addr),
        &format!("/api/stores/{name}/stats"),
        &[("X-Admin-Key", key)],
        false,
        std::time::Duration::from_secs(2),
    )?;
    if r.status != 200 {
        return Err(format!("the server answered {}", r.status));
    }
    let v: serde_json::Value =
        serde_json::from_str(&r.body).map_err(|_| "bad answer from the server")?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let ts = |k: &str| v[k].as_i64().unwrap_or(0);
    Ok(store::Stats {
        num_blocks: n("num_blocks") as u32,
        data_block_size: n("data_block_size") as u32,
        index_block_size: n("index_block_size") as u32,
        data_type: v["data_type"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or("bad answer from the server")?,
        durability: v["durability"].as_str().unwrap_or_default().to_string(),
        head_block: n("head_block") as u32,
        tail_block: n("tail_block") as u32,
        active_blocks: n("active_blocks") as u32,
        object_count: n("object_count"),
        bytes_used: n("bytes_used"),
        footprint_bytes: n("footprint_bytes"),
        oldest_timestamp: ts("oldest_timestamp"),
        newest_timestamp: ts("newest_timestamp"),
    })
}

/// `Server: ...`: from the server's lock file, or (a server of an older
/// version, without one) from stores held open by another process.
fn server_line(lock: &Option<String>, stores_held: bool) -> String {
    match lock {
        Some(info) if !info.is_empty() => format!("Server: running ({info})"),
        Some(_) => "Server: running".to_string(),
        None if stores_held => "Server: running (stores are held open by it)".to_string(),
        None => "Server: not running".to_string(),
    }
}

/// `tsstore export`: the same bytes as `GET /api/stores/:store/export`,
/// read from the store's files. A store held by a running server is
/// refused with the request to make instead: the server holds the store's
/// lock, and a second process reading files another one writes could see
/// a torn state.
pub fn export(config: &Config, a: &ExportArgs, out: &mut dyn Write) -> Result<()> {
    use crate::codec::export::{self, Format, Plan};
    let base = base(config, &a.data_path);
    let format =
        Format::parse(Some(&a.format)).map_err(|e| anyhow::anyhow!("Failed to export: {e}"))?;
    let (start, end) = export::resolve_range(
        a.start_time.as_deref(),
        a.end_time.as_deref(),
        a.since.as_deref(),
    )
    .context("Failed to export")?;
    let fields = export::parse_fields(a.fields.as_deref()).context("Failed to export")?;
    let filter = a
        .filter
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(|f| store::Filter::new(f, a.filter_ignore_case));
    store_dir(config, &a.data_path, &a.store).context("Failed to export")?;
    let s = match registry::open_offline(&base, &a.store) {
        Ok(s) => s,
        Err(registry::Error::Locked { .. }) => bail!(
            "Failed to export: store '{}' is open in a running server; export it over HTTP: GET /api/stores/{}/export?format={}",
            a.store,
            a.store,
            format.extension()
        ),
        Err(e) => return Err(anyhow::Error::new(e).context("Failed to export")),
    };
    let plan = Plan::new(&s, format, start, end, filter, fields).context("Failed to export")?;
    let mut file;
    let mut stdout;
    let w: &mut dyn Write = match &a.output {
        Some(p) => {
            file = std::io::BufWriter::new(
                std::fs::File::create(p)
                    .with_context(|| format!("Failed to export: cannot create {}", p.display()))?,
            );
            &mut file
        }
        None => {
            stdout = out;
            &mut stdout
        }
    };
    let mut failed: Option<std::io::Error> = None;
    plan.run(&s, |chunk| match w.write_all(chunk.as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })
    .context("Failed to export")?;
    if let Some(e) = failed {
        return Err(anyhow::Error::new(e).context("Failed to export"));
    }
    w.flush().context("Failed to export")?;
    s.close().context("Failed to export")?;
    Ok(())
}

/// `tsstore calc`.
pub fn calc(a: &CalcArgs, out: &mut dyn Write) -> Result<()> {
    let probe = store::Config {
        num_blocks: a.blocks.unwrap_or(1024).max(2),
        data_block_size: a.data_size,
        ..store::Config::default()
    };
    probe.validate()?;
    if a.rate.is_nan() || a.rate <= 0.0 {
        bail!("--rate must be greater than 0");
    }
    let retention = match &a.retention {
        Some(r) => {
            Some(crate::duration::parse(r).map_err(|e| anyhow::anyhow!("--retention: {e}"))?)
        }
        None => None,
    };
    let (objs, span) = per_block(a.data_size, a.object_size);
    writeln!(out, "Data block size:   {} bytes", a.data_size)?;
    writeln!(out, "Object size:       {} bytes", a.object_size)?;
    if span == 1 {
        writeln!(out, "Objects per block: {objs}")?;
    } else {
        writeln!(out, "Blocks per object: {span}")?;
    }
    writeln!(out, "Insert rate:       {}/s", a.rate)?;
    if let (Some(r), Some(d)) = (&a.retention, retention) {
        let need_objects = (d.as_secs_f64() * a.rate).ceil() as u64;
        let blocks = if span == 1 {
            need_objects.div_ceil(objs)
        } else {
            need_objects * span
        } + 1;
        writeln!(out, "Wanted retention:  {r}")?;
        writeln!(out, "Blocks needed:     {blocks}")?;
        let bytes = blocks * a.data_size as u64;
        writeln!(out, "Data file size:    {}", human_bytes(bytes))?;
        return Ok(());
    }
    let blocks = a.blocks.unwrap_or(1024) as u64;
    let capacity = capacity(blocks, a.data_size, a.object_size).capacity;
    writeln!(out, "Blocks:            {blocks}")?;
    writeln!(
        out,
        "Data file size:    {}",
        human_bytes(blocks * a.data_size as u64)
    )?;
    writeln!(out, "Capacity:          {capacity} objects")?;
    writeln!(
        out,
        "Retention:         {}",
        human_duration(capacity as f64 / a.rate)
    )?;
    Ok(())
}

/// `tsstore swagger`: serves the OpenAPI description with CORS so the
/// Swagger Editor can load it, and prints the editor address.
pub async fn swagger(a: &SwaggerArgs, out: &mut (dyn Write + Send)) -> Result<()> {
    use axum::http::{header, HeaderValue, Method};
    use axum::routing::get;
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE]);
    let spec = || async {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            )],
            crate::api::openapi::OPENAPI_YAML,
        )
    };
    let app = axum::Router::new()
        .route("/swagger.yaml", get(spec))
        .route("/openapi.yaml", get(spec))
        .layer(cors);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", a.port))?;
    let port = listener.local_addr()?.port();
    let url = format!("http://localhost:{port}/swagger.yaml");
    writeln!(
        out,
        "Serving swagger.yaml on {url}\nOpen in a browser: https://editor.swagger.io/?url={url}\nPress Ctrl+C to stop\n"
    )?;
    out.flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::shutdown::signal())
        .await?;
    writeln!(out, "\nShutting down swagger server...")?;
    Ok(())
}

/// `tsstore healthcheck`: the server this configuration describes (its
/// bind address, a wildcard meaning loopback, its port, HTTP or HTTPS)
/// answers `GET /health` with 200 and `"status": "ok"` within the timeout.
/// An error (exit status 1) says what it got instead.
pub fn healthcheck(config: &Config, a: &HealthcheckArgs, out: &mut dyn Write) -> Result<()> {
    let host = a.host.as_deref().unwrap_or(&config.host);
    let port = a.port.unwrap_or(config.port);
    let tls = config.tls.is_some();
    let addr = probe::local_addr(host, port).map_err(|e| anyhow::anyhow!("unhealthy: {e}"))?;
    let url = format!("{}://{addr}/health", if tls { "https" } else { "http" });
    let r = probe::get(
        addr,
        "/health",
        &[],
        tls,
        std::time::Duration::from_secs(a.timeout),
    )
    .map_err(|e| anyhow::anyhow!("unhealthy: {url}: {e}"))?;
    let body: String = r.body.trim().chars().take(200).collect();
    let ok = serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["status"] == "ok");
    if r.status != 200 || !ok {
        bail!("unhealthy: {url} answered {}: {body}", r.status);
    }
    writeln!(out, "healthy: {url} answered {body}")?;
    Ok(())
}

/// The admin key of a container's first start: with no admin key
/// configured and `TSSTORE_ADMIN_KEY_FILE` naming a file that does not
/// exist yet (`Config::load` reads it when it does), generates a key (32
/// random bytes as hex), keeps it in that file (mode 0600) and prints it
/// once on `log`. Does nothing otherwise: without that variable `serve`
/// still refuses to start without a key.
pub fn admin_key_first_start(config: &mut Config, log: &mut dyn Write) -> Result<()> {
    let (None, Some(path)) = (&config.admin_key, &config.admin_key_file) else {
        return Ok(());
    };
    let path = path.clone();
    let key = random_hex(32)?;
    let created = write_new_private_file(&path, &format!("{key}\n")).with_context(|| {
        format!(
            "TSSTORE_ADMIN_KEY_FILE: cannot keep a generated admin key in {}",
            path.display()
        )
    })?;
    if !created {
        // Another process made the file since the configuration was read.
        config.admin_key = config::read_admin_key_file(&path)?;
        return Ok(());
    }
    writeln!(
        log,
        "tsstore: no admin key was configured: generated one and kept it in {} (it is not printed again)\ntsstore admin key: {key}",
        path.display()
    )?;
    config.admin_key = Some(key);
    Ok(())
}

/// `n` random bytes from the OS (ring's generator) as lower-case hex.
fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random numbers from the operating system"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `path` holding `text`, mode 0600, whole or not at all: a
/// temporary file in the same directory is written and synced, then
/// hard-linked to `path`, which fails if `path` exists. `false`: it did
/// (another process was first); the file there is left as it is.
fn write_new_private_file(path: &Path, text: &str) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let suffix = random_hex(8).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(
        ".{}.{suffix}.tmp",
        name.unwrap_or_else(|| "key".into())
    ));
    let linked = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    if linked? {
        // The new name, like the data, must survive a power cut.
        std::fs::File::open(dir)?.sync_all()?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_private_file_is_made_once_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/.admin_key");
        assert!(write_new_private_file(&path, "first\n").unwrap());
        assert!(!write_new_private_file(&path, "second\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The temporary files are gone, the won race's and the lost one's.
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [".admin_key"]);
        assert_ne!(random_hex(32).unwrap(), random_hex(32).unwrap());
        assert_eq!(random_hex(32).unwrap().len(), 64);
    }

    #[test]
    fn calc_capacity_and_reverse() {
        assert_eq!(per_block(4096, 100), (35, 1));
        assert_eq!(per_block(256, 1000), (1, 5));
        let mut out = Vec::new();
        calc(
            &CalcArgs {
                blocks: Some(1024),
                data_size: 4096,
                object_size: 100,
                rate: 1.0,
                retention: None,
            },
            &mut out,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Capacity:          35840 objects"), "{s}");
        assert!(
            s.contains("Retention:         0d 9h") || s.contains("9h 57m"),
            "{s}"
        );
        let mut out = Vec::new();
        calc(
            &CalcArgs {
                blocks: None,
                data_size: 4096,
                object_size: 100,
                rate: 10.0,
                retention: Some("1d".into()),
            },
            &mut out,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        // 864,000 objects / 35 per block = 24,686 blocks, plus the head block.
        assert!(s.contains("Blocks needed:     24687"), "{s}");
    }
}
