use std::time::{Duration, Instant};
use backend_db::{DbConfig, DbPool, DbStore};
use session_core::{Record, SessionStore, Timestamp};
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let url = std::env::args().nth(1).unwrap();
        if std::env::args().nth(2).is_some() { tokio::spawn(async { loop { tokio::time::sleep(Duration::from_millis(100)).await; } }); }
        let cfg = DbConfig { max_connections: 4, ..DbConfig::new(url) };
        let pool = DbPool::connect(&cfg).await.unwrap();
        let a = DbStore::new(pool.clone(), "zz_load_a").unwrap().with_statement_timeout(Some(Duration::from_secs(5)));
        a.migrate().await.unwrap();
        let b = DbStore::new(pool.clone(), "zz_load_a").unwrap();
        let k = a.create(&Record::with_ttl(Default::default(), 3600)).await.unwrap();
        let DbPool::Postgres(p) = &pool else { panic!() };
        let sql = "SELECT session_data, expires_at, version FROM \"zz_load_a\" WHERE session_key = $1 AND expires_at > $2";
        let mut t = [Duration::ZERO; 3];
        for i in 0..50000 {
            for j in 0..3 {
                let s = (i + j) % 3;
                let st = Instant::now();
                match s {
                    0 => { let r: Option<(Vec<u8>, i64, i64)> = sqlx::query_as(sql).bind(k.as_str()).bind(Timestamp::now().as_unix_millis()).fetch_optional(p).await.unwrap(); assert!(r.is_some()); }
                    1 => { a.load(&k).await.unwrap().unwrap(); }
                    _ => { b.load(&k).await.unwrap().unwrap(); }
                }
                t[s] += st.elapsed();
            }
        }
        println!("raw {:?} store+deadline {:?} store {:?}", t[0]/50000, t[1]/50000, t[2]/50000);
        a.drop_table().await.unwrap();
    });
}
