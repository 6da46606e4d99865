//! encpass: encrypts a destination password with AWS KMS and prints the standard base64
//! of the ciphertext, the value stored in `perseus_auth.dest_pass_enc`. Drop-in for the
//! Go tool: `encpass -access_key_id -secret_access_key -region -endpoint -key_arn -passwd`.

// One flag parser for both CLIs, so `-flag value` means the same everywhere.
#[path = "../../cmd-genhash/src/cli.rs"]
mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use cli::Kind;
use perseus::config::AwsSettings;
use perseus::secrets::kms::Kms;

const USAGE: &str = "\
Usage: encpass -key_arn ARN -passwd PASSWORD [-region R] [-endpoint URL]
               [-access_key_id ID -secret_access_key KEY]
       encpass -key_arn ARN --passwd-stdin < file

Encrypts PASSWORD with the KMS key ARN and prints the standard base64 of the
ciphertext, for perseus_auth.dest_pass_enc. Without -access_key_id and
-secret_access_key the default AWS credential chain is used (environment,
shared config files, web identity, container or instance role). Flags take one
or two dashes, with the value after `=` or as the next argument.

  -key_arn ARN               KMS key ARN, alias ARN or key id (required)
  -passwd PASSWORD           the password (visible to other local users via ps)
  --passwd-stdin             read the password from the first line of stdin
  -region REGION             AWS region (default: from the AWS environment)
  -endpoint URL              KMS endpoint override, e.g. a local emulator
  -access_key_id ID          static AWS access key id
  -secret_access_key KEY     static AWS secret access key
  -h, --help                 show this help
";

const SPECS: &[(&str, Kind)] = &[
    ("access_key_id", Kind::Value),
    ("secret_access_key", Kind::Value),
    ("region", Kind::Value),
    ("endpoint", Kind::Value),
    ("key_arn", Kind::Value),
    ("passwd", Kind::Value),
    ("passwd-stdin", Kind::Switch),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("encpass: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let flags = cli::parse(SPECS, std::env::args_os().skip(1))?;
    if flags.help {
        print!("{USAGE}");
        return Ok(());
    }
    let password = match (flags.is_set("passwd"), flags.switch("passwd-stdin")) {
        (true, true) => return Err("give either -passwd or --passwd-stdin, not both".into()),
        (false, true) => cli::read_secret_line(std::io::stdin().lock())?,
        (_, false) => flags.value("passwd").to_owned(),
    };
    if password.is_empty() {
        return Err("no password: use -passwd PASSWORD or --passwd-stdin (see --help)".into());
    }
    let aws = AwsSettings {
        access_key_id: flags.value("access_key_id").to_owned(),
        secret_access_key: flags.value("secret_access_key").to_owned(),
        region: flags.value("region").to_owned(),
        endpoint: flags.value("endpoint").to_owned(),
        kms_key_arn: flags.value("key_arn").to_owned(),
    };
    if aws.kms_key_arn.trim().is_empty() {
        return Err("no KMS key: use -key_arn ARN (see --help)".into());
    }
    let kms = Kms::try_new(&aws).await.map_err(|e| e.to_string())?;
    let ciphertext = kms
        .encrypt(&aws.kms_key_arn, password.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ciphertext}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}
