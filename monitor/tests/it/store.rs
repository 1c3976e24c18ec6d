//! A row Postgres refuses for its data is stored bare instead of blocking the rest.

use mindbus_monitor::record::Record;
use mindbus_monitor::store;
use serde_json::json;

use crate::support::TestDb;

fn row(seq: i64, ty: &str) -> Record {
    Record {
        stream: "s".into(),
        entry_ms: 1,
        entry_seq: seq,
        kind: "event",
        ty: Some(ty.into()),
        fields: json!({"type": ty}),
        ..Record::default()
    }
}

#[tokio::test]
async fn a_refused_row_is_stored_bare_and_the_batch_goes_on() {
    let db = TestDb::new("bare").await;
    let pool = db.pool().await;
    store::migrate(&pool).await.unwrap();
    // U+0000 in a text column is refused by Postgres (record() never builds such a row;
    // this stands for any row Postgres refuses whatever the retries).
    let rows = [row(1, "ok.before"), row(2, "bad\0type"), row(3, "ok.after")];
    assert_eq!(
        store::insert_or_bare(&pool, &rows, 1 << 20).await.unwrap(),
        3
    );
    let stored: Vec<(i64, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT entry_seq, type, malformed FROM mindbus_entries ORDER BY entry_seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored[0].1.as_deref(), Some("ok.before"));
    assert_eq!(stored[1].1, None, "the refused row is kept bare");
    assert!(
        stored[1].2.as_deref().unwrap().contains("postgres refused"),
        "{stored:?}"
    );
    assert_eq!(stored[2].1.as_deref(), Some("ok.after"));
    assert_eq!(
        store::insert_or_bare(&pool, &rows, 1 << 20).await.unwrap(),
        0,
        "a redelivery inserts nothing"
    );
}
