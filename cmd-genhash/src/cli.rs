//! Go-compatible command-line flags and a secret read from stdin, shared by genhash
//! and encpass (encpass includes this file), because the Go tools took `-name value`
//! and scripts written for them must keep working next to GNU `--name=value`.
//!
//! Accepted forms: `-name value`, `-name=value`, `--name value`, `--name=value`.
//! As in Go, the argument after a value flag is its value even when it starts with `-`,
//! and a repeated flag keeps its last value. Errors name flags, never their values.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::BufRead;

/// Whether a flag carries a value or is a switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Value,
    Switch,
}

/// The flags found on a command line.
#[derive(Debug, Default)]
pub struct Parsed {
    values: BTreeMap<&'static str, String>,
    switches: BTreeSet<&'static str>,
    pub help: bool,
}

impl Parsed {
    /// The value of a value flag, empty when it was not given (as Go's flag.String).
    pub fn value(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
    pub fn switch(&self, name: &str) -> bool {
        self.switches.contains(name)
    }
}

/// Parses `args` (without the program name) against `specs`.
/// `-h`, `-help` and `--help` set `help`.
pub fn parse(
    specs: &[(&'static str, Kind)],
    args: impl IntoIterator<Item = OsString>,
) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut args = args.into_iter().enumerate();
    while let Some((position, arg)) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|_| format!("argument {} is not valid UTF-8", position + 1))?;
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!(
                "unexpected argument {} (flags start with -)",
                position + 1
            ));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        if name.is_empty() {
            return Err(format!("unexpected argument {}", position + 1));
        }
        if matches!(name, "h" | "help") {
            parsed.help = true;
            continue;
        }
        let Some(&(known, kind)) = specs.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown flag -{name} (see --help)"));
        };
        match (kind, inline) {
            (Kind::Value, Some(value)) => {
                parsed.values.insert(known, value.to_owned());
            }
            (Kind::Value, None) => {
                let (_, value) = args
                    .next()
                    .ok_or_else(|| format!("flag -{known} needs a value"))?;
                let value = value
                    .into_string()
                    .map_err(|_| format!("the value of -{known} is not valid UTF-8"))?;
                parsed.values.insert(known, value);
            }
            (Kind::Switch, None | Some("true")) => {
                parsed.switches.insert(known);
            }
            (Kind::Switch, Some("false")) => {
                parsed.switches.remove(known);
            }
            (Kind::Switch, Some(_)) => return Err(format!("flag -{known} takes no value")),
        }
    }
    Ok(parsed)
}

/// Longest secret line accepted on stdin; more is surely a mistake (wrong file piped).
const MAX_LINE: u64 = 64 * 1024;

/// Reads one line, without its trailing `\n` or `\r\n`. Errors never show the input.
pub fn read_secret_line(input: impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    input
        .take(MAX_LINE + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    if line.is_empty() {
        return Err("stdin is empty: expected one line holding the password".into());
    }
    if line.len() as u64 > MAX_LINE {
        return Err(format!("the line on stdin is longer than {MAX_LINE} bytes"));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    String::from_utf8(line).map_err(|_| "the line on stdin is not valid UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[(&str, Kind)] = &[("password", Kind::Value), ("password-stdin", Kind::Switch)];

    fn run(args: &[&str]) -> Result<Parsed, String> {
        parse(SPECS, args.iter().map(OsString::from))
    }

    #[test]
    fn every_go_and_gnu_form_is_accepted() {
        for args in [
            &["-password", "pw"][..],
            &["-password=pw"],
            &["--password", "pw"],
            &["--password=pw"],
        ] {
            assert_eq!(run(args).unwrap().value("password"), "pw", "{args:?}");
        }
    }

    #[test]
    fn values_may_start_with_a_dash_or_hold_equals() {
        assert_eq!(run(&["-password", "-x"]).unwrap().value("password"), "-x");
        assert_eq!(run(&["--password=a=b"]).unwrap().value("password"), "a=b");
        assert_eq!(run(&["--password="]).unwrap().value("password"), "");
        assert!(run(&["--password="]).unwrap().is_set("password"));
    }

    #[test]
    fn switches_help_and_last_value_wins() {
        let p = run(&["--password-stdin", "-password", "a", "-password", "b"]).unwrap();
        assert!(p.switch("password-stdin"));
        assert_eq!(p.value("password"), "b");
        assert!(
            !run(&["-password-stdin=false"])
                .unwrap()
                .switch("password-stdin")
        );
        assert!(run(&["-h"]).unwrap().help);
        assert!(run(&["--help"]).unwrap().help);
        assert!(!run(&[]).unwrap().help);
    }

    #[test]
    fn mistakes_are_errors_that_hide_values() {
        for (args, expect) in [
            (&["-password"][..], "needs a value"),
            (&["--pasword=secret"], "unknown flag -pasword"),
            (&["secret"], "unexpected argument 1"),
            (&["--password-stdin=secret"], "takes no value"),
            (&["--"], "unexpected argument"),
            (&["-"], "unexpected argument"),
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains(expect), "{args:?}: {err}");
            assert!(!err.contains("secret"), "{args:?}: {err}");
        }
    }

    #[test]
    fn stdin_line_loses_only_its_line_ending() {
        assert_eq!(read_secret_line(&b"pw\n"[..]).unwrap(), "pw");
        assert_eq!(read_secret_line(&b"pw\r\n"[..]).unwrap(), "pw");
        assert_eq!(read_secret_line(&b" p w \nignored\n"[..]).unwrap(), " p w ");
        assert_eq!(read_secret_line(&b"no newline"[..]).unwrap(), "no newline");
        assert_eq!(read_secret_line(&b"\n"[..]).unwrap(), "");
        assert!(read_secret_line(&b""[..]).unwrap_err().contains("empty"));
        assert!(
            read_secret_line(&b"\xff\n"[..])
                .unwrap_err()
                .contains("UTF-8")
        );
        let long = vec![b'a'; MAX_LINE as usize + 5];
        assert!(read_secret_line(&long[..]).unwrap_err().contains("longer"));
    }
}
