//! A third driver through Perseus: psycopg 3 with server-side prepared statements forced
//! (prepare_threshold=0), two tenants on one server connection, many transactions.

use crate::support;

use std::process::Command;

use support::datapath::{Env, pool};

const SCRIPT: &str = r#"
import sys, psycopg
port, tenants = int(sys.argv[1]), sys.argv[2:]
conns = []
for spec in tenants:
    user, password, db, schema, expect = spec.split(":")
    c = psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=db,
                        options=f"-c search_path={schema}", autocommit=True, prepare_threshold=0)
    conns.append((c, int(expect)))
for round in range(30):
    for c, expect in conns:
        v = c.execute("SELECT v + %s FROM t", (round,)).fetchone()[0]
        assert v == expect + round, (v, expect, round)
        with c.transaction():
            c.execute("SELECT %s::int", (round,)).fetchone()
print("ok", len(conns))
"#;

#[tokio::test]
async fn psycopg_prepared_statements_through_perseus() {
    let env = Env::start(&["py_a", "py_b"], pool(1)).await;
    let python = support::repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/test.sh (it installs moto and psycopg into .venv)",
        python.display()
    );
    let mut cmd = Command::new(&python);
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg(env.perseus.port().to_string());
    for (i, t) in env.tenants.iter().enumerate() {
        cmd.arg(format!(
            "{}:{}:{}:{}:{i}",
            t.source_user, t.password, t.source_db, t.source_schema
        ));
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run python"))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'psycopg'"),
        "psycopg missing: run scripts/test.sh (it installs psycopg into .venv)"
    );
    assert!(
        out.status.success(),
        "python client failed: {stderr}\n{}",
        env.perseus.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 2");
}
