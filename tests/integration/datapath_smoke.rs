//! End-to-end smoke: two tenants in one destination database through a running perseus.

use crate::support;

use support::Perseus;
use support::env::TenantEnv;

#[tokio::test]
async fn two_tenants_query_their_own_schema() {
    let env = TenantEnv::new(&["tenant_a", "Tenant B"]).await;
    let perseus = Perseus::start(&env.config());
    for i in 0..2 {
        let (client, conn) =
            tokio_postgres::connect(&env.dsn(perseus.port(), i), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect tenant {i}: {e}\n{}", perseus.log()));
        tokio::spawn(conn);
        let rows = client.simple_query("SELECT v FROM t").await.unwrap();
        let got: Vec<_> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![i.to_string()]);
        let v = i as i32;
        let row = client
            .query_one("SELECT v FROM t WHERE v = $1", &[&v])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), v);
    }
}
