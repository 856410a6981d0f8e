//! `voxgate`: one binary, many roles. Each subcommand is a thin driver over a sans-I/O core.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod audit_cmd;
mod audit_file;
mod cert;
mod config_file;
mod demo;
mod gateway;
mod li;
mod metrics_http;
mod proxy;
mod spg;
mod srtp_cmd;
mod tls;
mod trace_cmd;
mod ua;

#[derive(Debug, Parser)]
#[command(name = "voxgate", version, about = "Secure, accountable voice over IP", long_about = None)]
struct Cli {
    /// Log output format (logs go to stderr; filter with RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Development CA and TLS certificates (server, client, gateway) in one step.
    Cert {
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// Registrar, location service and stateful SIP proxy (UDP, TCP, TLS) with digest auth.
    Proxy(proxy::ProxyArgs),
    /// Enterprise voice gateway: its users' calls go to the provider in SRTP with keys it
    /// escrows (key_update), every datagram tagged with the session_ID.
    Gateway(gateway::GatewayArgs),
    /// Service-provider gateway: SIP proxy, key escrow server and the media relay that drops
    /// unescrowed media and verifies the escrowed keys are the ones used.
    Spg(spg::SpgArgs),
    /// Tracing anonymized encrypted calls: an inter-packet-delay watermark embedded by a live
    /// UDP relay, detected in captures, evaluated by simulation.
    Trace {
        #[command(subcommand)]
        command: trace_cmd::TraceCommand,
    },
    /// The whole system on loopback in one command: two SPGs, two voice gateways, a warrant
    /// on alice, her call to bob intercepted and decrypted, a rogue stream dropped.
    Demo(demo::DemoArgs),
    /// Lawful interception: the mediation (warrants with dual approval, IRI and decrypted
    /// content to agencies, tamper-evident audit), key generation, audit verification.
    Li {
        #[command(subcommand)]
        command: li::LiCommand,
    },
    /// A small SIP user agent: register, call, answer, hang up; WAV audio as G.711 in SRTP.
    Ua(ua::UaArgs),
    /// SRTP tools: decrypt or encrypt the RTP/RTCP streams of a pcap/pcapng capture.
    Srtp {
        #[command(subcommand)]
        command: srtp_cmd::SrtpCommand,
    },
    /// Audit a capture: plain RTP turned back into audio, SDES keys in clear (and the SRTP they
    /// decrypt), weak SIP auth, SIP without TLS, NULL ciphers; call quality as Wireshark has it.
    Audit(audit_cmd::AuditArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Srtp { command } => srtp_cmd::run(command),
        Command::Audit(args) => audit_cmd::run(args),
        Command::Cert { command } => cert::run(command),
        Command::Proxy(args) => proxy::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Spg(args) => spg::run(args),
        Command::Ua(args) => ua::run(args),
        Command::Li { command } => li::run(command),
        Command::Demo(args) => demo::run(args),
        Command::Trace { command } => trace_cmd::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("voxgate: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
