//! The `fanout` binary: parse the command line, set up logging, run.
//! Usage and configuration errors exit with 64 (EX_USAGE).

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::process::ExitCode;

use clap::Parser;
use fanout::{
    app,
    auth::{Authenticator, JwtAlgorithm, JwtKey},
    config::{Cli, Command, Config, ENV_JWT_SECRET, LogFormat, TokenArgs},
    dev,
    protocol::{NAME_RULE, is_valid_name},
    shutdown::Shutdown,
};
use tracing_subscriber::EnvFilter;

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve(cfg) => serve(*cfg),
        Command::Token(args) => token(&args),
    }
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("fanout: {msg}");
    ExitCode::from(EX_USAGE)
}

fn serve(mut cfg: Config) -> ExitCode {
    let filter = match EnvFilter::try_new(&cfg.log) {
        Ok(f) => f,
        Err(e) => return usage_error(format!("FANOUT_LOG: {e}")),
    };
    // Colour only on a terminal: logs written to a file or a pipe carry no
    // escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match cfg.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let dev_notes = if cfg.dev {
        match dev::prepare(&mut cfg) {
            Ok(notes) => notes,
            Err(e) => return usage_error(e),
        }
    } else {
        Vec::new()
    };
    // Every configuration problem, a bad key or Redis URL included, is a
    // usage error (exit 64).
    let settings = match app::Settings::from_config(cfg) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    for note in dev_notes {
        tracing::warn!("{note}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanout: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let dev_mode = settings.config().dev;
        let banner_cfg = settings.config().clone();
        let app = match app::spawn(settings, Shutdown::new()).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("fanout: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        if dev_mode {
            println!("{}", dev::banner(&banner_cfg, app.auth(), app.addr()));
        }
        if app::run(app).await {
            ExitCode::SUCCESS
        } else {
            // Forced by a second signal (128 + SIGINT, by convention).
            ExitCode::from(130)
        }
    })
}

fn token(args: &TokenArgs) -> ExitCode {
    let Some(secret) = args.jwt.secret.as_ref().filter(|s| !s.is_empty()) else {
        return usage_error(format!(
            "{ENV_JWT_SECRET} (or --jwt-secret) must be set to mint a token"
        ));
    };
    if !is_valid_name(&args.sub) {
        return usage_error(format!("--sub must be {NAME_RULE}"));
    }
    let auth = match Authenticator::new(
        JwtAlgorithm::Hs256,
        &JwtKey::Secret(secret.clone().into_bytes()),
        args.jwt.issuer.clone(),
        args.jwt.audience.clone(),
        &[],
    ) {
        Ok(a) => a,
        Err(e) => return usage_error(e),
    };
    match auth.mint(&args.sub, &args.groups, &args.publish, args.ttl) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(e),
    }
}
