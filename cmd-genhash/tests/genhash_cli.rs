//! The genhash binary as an operator runs it: every flag form, stdin, help and errors.
//! Its output must verify with the library's easy-scrypt check.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use perseus::auth::hash::{HashError, verify_password};

fn genhash(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_genhash"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("genhash starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // genhash may exit before reading (flag errors); a closed pipe is fine then.
        if let Err(e) = pipe.write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    child.wait_with_output().expect("genhash finishes")
}

/// Asserts success and returns the single hash line printed on stdout.
fn hash_of(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "genhash failed: {stderr}");
    assert!(out.stderr.is_empty(), "unexpected stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    let hash = stdout
        .strip_suffix('\n')
        .expect("output ends with a newline");
    assert!(
        !hash.contains(['\n', ' ']),
        "stdout must hold only the hash: {stdout:?}"
    );
    hash.to_owned()
}

fn assert_fails(out: &Output, stderr_has: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    assert!(
        stderr.contains(stderr_has),
        "stderr lacks {stderr_has:?}: {stderr}"
    );
}

#[test]
fn every_flag_form_prints_a_verifying_hash() {
    for args in [
        &["-password", "s3cret"][..],
        &["-password=s3cret"],
        &["--password", "s3cret"],
        &["--password=s3cret"],
    ] {
        let hash = hash_of(&genhash(args, None));
        verify_password(&hash, b"s3cret").unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let wrong = verify_password(&hash, b"s3cret ");
        assert!(matches!(wrong, Err(HashError::Mismatch)), "{args:?}");
    }
}

#[test]
fn password_stdin_strips_only_the_line_ending() {
    for input in [
        &b"p\xc3\xa4ss word\n"[..],
        b"p\xc3\xa4ss word\r\n",
        b"p\xc3\xa4ss word",
    ] {
        let hash = hash_of(&genhash(&["--password-stdin"], Some(input)));
        verify_password(&hash, "päss word".as_bytes()).unwrap();
    }
    let hash = hash_of(&genhash(
        &["-password-stdin"],
        Some(b" lead\nsecond line\n"),
    ));
    verify_password(&hash, b" lead").unwrap();
}

#[test]
fn a_value_starting_with_a_dash_is_the_password() {
    let hash = hash_of(&genhash(&["-password", "-dash"], None));
    verify_password(&hash, b"-dash").unwrap();
}

#[test]
fn help_goes_to_stdout_and_succeeds() {
    for flag in ["--help", "-help", "-h"] {
        let out = genhash(&[flag], None);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("-password") && text.contains("--password-stdin"),
            "{text}"
        );
    }
}

#[test]
fn mistakes_fail_on_stderr_without_echoing_the_password() {
    assert_fails(&genhash(&[], None), "no password");
    assert_fails(&genhash(&["-password="], None), "no password");
    assert_fails(&genhash(&["-password"], None), "needs a value");
    assert_fails(
        &genhash(&["--pasword=hunter2"], None),
        "unknown flag -pasword",
    );
    assert_fails(&genhash(&["hunter2"], None), "unexpected argument");
    assert_fails(&genhash(&["--password-stdin"], Some(b"")), "stdin is empty");
    assert_fails(&genhash(&["--password-stdin"], Some(b"\n")), "no password");
    let both = genhash(&["--password-stdin", "-password", "hunter2"], Some(b"x\n"));
    assert_fails(&both, "not both");
    for out in [
        genhash(&["--pasword=hunter2"], None),
        genhash(&["hunter2"], None),
    ] {
        assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    }
}
