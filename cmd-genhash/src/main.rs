//! genhash: prints the easy-scrypt hash of a password, the value stored in
//! `perseus_auth.source_pass_hashed`. Drop-in for the Go tool: `genhash -password X`.

mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use cli::Kind;
use perseus::auth::hash::{HashParams, try_hash_password};

const USAGE: &str = "\
Usage: genhash -password PASSWORD
       genhash --password-stdin < file

Prints the easy-scrypt hash (N=16384, r=8, p=1) of PASSWORD, standard base64,
for perseus_auth.source_pass_hashed. Flags take one or two dashes, with the
value after `=` or as the next argument.

  -password PASSWORD   the password (visible to other local users via ps)
  --password-stdin     read the password from the first line of stdin
  -h, --help           show this help
";

const SPECS: &[(&str, Kind)] = &[("password", Kind::Value), ("password-stdin", Kind::Switch)];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("genhash: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let flags = cli::parse(SPECS, std::env::args_os().skip(1))?;
    if flags.help {
        print!("{USAGE}");
        return Ok(());
    }
    let password = match (flags.is_set("password"), flags.switch("password-stdin")) {
        (true, true) => return Err("give either -password or --password-stdin, not both".into()),
        (false, true) => cli::read_secret_line(std::io::stdin().lock())?,
        (_, false) => flags.value("password").to_owned(),
    };
    if password.is_empty() {
        return Err("no password: use -password PASSWORD or --password-stdin (see --help)".into());
    }
    let hash =
        try_hash_password(password.as_bytes(), HashParams::STANDARD).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{hash}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}
