//! `voxgate cert`: a development certificate authority and TLS certificates, so that a new user
//! has working (mutual) TLS in one step. Keys are ECDSA P-256; private keys are written with
//! mode 0600 and never printed. Existing files are not overwritten without `--force`.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// One step: a CA, a server certificate and a client certificate in DIR.
    Dev(DevArgs),
    /// A new certificate authority (DIR/ca.pem, DIR/ca.key).
    Ca(CaArgs),
    /// A certificate signed by an existing CA (for a proxy, a gateway or an SPG).
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    out: PathBuf,
    /// DNS names of the server certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME", default_values = ["localhost"])]
    dns: Vec<String>,
    /// IP addresses of the server certificate (repeatable).
    #[arg(long = "ip", value_name = "ADDR", default_values = ["127.0.0.1", "::1"])]
    ip: Vec<IpAddr>,
    /// Validity of the leaf certificates, in days (the CA gets ten times as long).
    #[arg(long, default_value_t = 397)]
    days: i64,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct CaArgs {
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Common name of the CA.
    #[arg(long, default_value = "voxgate development CA")]
    name: String,
    #[arg(long, default_value_t = 3650)]
    days: i64,
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    ca_cert: PathBuf,
    /// The CA private key (PEM).
    #[arg(long, value_name = "FILE")]
    ca_key: PathBuf,
    /// Common name; also added as a DNS name when it is one.
    #[arg(long)]
    name: String,
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    #[arg(long = "ip", value_name = "ADDR")]
    ip: Vec<IpAddr>,
    /// Only for TLS servers (default: server and client).
    #[arg(long, conflicts_with = "client_only")]
    server_only: bool,
    /// Only for TLS clients (default: server and client).
    #[arg(long)]
    client_only: bool,
    #[arg(long, default_value_t = 397)]
    days: i64,
    /// Output certificate (PEM) and key (PEM) files.
    #[arg(long, value_name = "FILE")]
    out_cert: PathBuf,
    #[arg(long, value_name = "FILE")]
    out_key: PathBuf,
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: CertCommand) -> Result<ExitCode> {
    match cmd {
        CertCommand::Dev(a) => dev(a),
        CertCommand::Ca(a) => {
            std::fs::create_dir_all(&a.out)
                .with_context(|| format!("cannot create {}", a.out.display()))?;
            let (cert, key) = make_ca(&a.name, a.days)?;
            write_file(&a.out.join("ca.pem"), cert.as_bytes(), false, a.force)?;
            write_file(&a.out.join("ca.key"), key.as_bytes(), true, a.force)?;
            println!("wrote {}/ca.pem and ca.key", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Issue(a) => {
            let ca_pem = std::fs::read_to_string(&a.ca_cert)
                .with_context(|| format!("cannot read {}", a.ca_cert.display()))?;
            let ca_key_pem = std::fs::read_to_string(&a.ca_key)
                .with_context(|| format!("cannot read {}", a.ca_key.display()))?;
            let ca_key = KeyPair::from_pem(&ca_key_pem).context("bad CA key")?;
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("bad CA certificate")?;
            let mut dns = a.dns.clone();
            if a.name.parse::<IpAddr>().is_err()
                && !dns.contains(&a.name)
                && looks_like_dns(&a.name)
            {
                dns.push(a.name.clone());
            }
            let usage = match (a.server_only, a.client_only) {
                (true, _) => Usage::Server,
                (_, true) => Usage::Client,
                _ => Usage::Both,
            };
            let (cert, key) = make_leaf(&issuer, &a.name, &dns, &a.ip, usage, a.days)?;
            write_file(&a.out_cert, cert.as_bytes(), false, a.force)?;
            write_file(&a.out_key, key.as_bytes(), true, a.force)?;
            println!("wrote {} and {}", a.out_cert.display(), a.out_key.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn dev(a: DevArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    // Refuse before writing anything, so a second run leaves a working set untouched.
    if !a.force {
        for f in [
            "ca.pem",
            "ca.key",
            "server.pem",
            "server.key",
            "client.pem",
            "client.key",
        ] {
            let p = a.out.join(f);
            if p.exists() {
                bail!(
                    "{} exists (use --force to replace the development certificates)",
                    p.display()
                );
            }
        }
    }
    let (ca_pem, ca_key_pem) = make_ca("voxgate development CA", a.days.saturating_mul(10))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let server_name = a.dns.first().cloned().unwrap_or_else(|| "localhost".into());
    let (srv, srv_key) = make_leaf(&issuer, &server_name, &a.dns, &a.ip, Usage::Server, a.days)?;
    let (cli, cli_key) = make_leaf(
        &issuer,
        "voxgate development client",
        &[],
        &[],
        Usage::Client,
        a.days,
    )?;
    for (name, data, secret) in [
        ("ca.pem", &ca_pem, false),
        ("ca.key", &ca_key_pem, true),
        ("server.pem", &srv, false),
        ("server.key", &srv_key, true),
        ("client.pem", &cli, false),
        ("client.key", &cli_key, true),
    ] {
        write_file(&a.out.join(name), data.as_bytes(), secret, a.force)?;
    }
    let names: Vec<String> = a
        .dns
        .iter()
        .cloned()
        .chain(a.ip.iter().map(ToString::to_string))
        .collect();
    println!(
        "wrote a development CA and certificates to {}:\n  ca.pem / ca.key          the CA (trust ca.pem; keep ca.key offline)\n  server.pem / server.key  server certificate for {}\n  client.pem / client.key  client certificate (for mutual TLS)",
        a.out.display(),
        names.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    Server,
    Client,
    Both,
}

fn looks_like_dns(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn validity(params: &mut CertificateParams, days: i64) -> Result<()> {
    if !(1..=36_500).contains(&days) {
        bail!("--days must be 1..=36500");
    }
    let now = OffsetDateTime::now_utc();
    // A little back-dating tolerates clock skew between hosts.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    Ok(())
}

fn make_ca(name: &str, days: i64) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "voxgate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn make_leaf(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    dns: &[String],
    ips: &[IpAddr],
    usage: Usage,
    days: i64,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for d in dns {
        if !looks_like_dns(d) && d != "localhost" {
            bail!("{d:?} is not a DNS name");
        }
        params.subject_alt_names.push(SanType::DnsName(
            d.clone().try_into().context("bad DNS name")?,
        ));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    if usage != Usage::Client && params.subject_alt_names.is_empty() {
        bail!("a server certificate needs at least one --dns or --ip name");
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "voxgate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Both => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    validity(&mut params, days)?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a file; private keys get mode 0600 from creation on (never world-readable, even
/// briefly).
fn write_file(path: &Path, data: &[u8], secret: bool, force: bool) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).with_context(|| {
        if path.exists() && !force {
            format!("{} exists (use --force to replace it)", path.display())
        } else {
            format!("cannot write {}", path.display())
        }
    })?;
    #[cfg(unix)]
    if secret {
        // create() keeps the mode of an existing file: tighten it when replacing with --force.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
