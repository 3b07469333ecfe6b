//! The facade's runtime selection: `QueryClient::new()` on the feature-selected runtime, and a
//! clear error (not a panic) when none is available.
#![allow(clippy::unwrap_used)]

use pystackquery::prelude::*;

#[cfg(feature = "tokio")]
#[test]
fn new_uses_the_current_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = QueryClient::new().unwrap();
        let options = QueryOptions::new(key!("t"), || async { Ok::<_, String>(1) });
        assert_eq!(client.fetch_query(&options).await.unwrap(), 1);
    });
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_without_time_driver_is_a_clear_error() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let err = rt.block_on(async { QueryClient::new().unwrap_err() });
    assert!(err.to_string().contains("time driver"), "{err}");
}

#[cfg(all(feature = "tokio", not(any(feature = "smol", feature = "async-std"))))]
#[test]
fn tokio_only_outside_a_runtime_is_a_clear_error() {
    let err = QueryClient::new().unwrap_err();
    assert!(err.to_string().contains("not inside a tokio runtime"), "{err}");
}

#[cfg(not(any(feature = "tokio", feature = "smol", feature = "async-std")))]
#[test]
fn no_runtime_feature_is_a_clear_error() {
    let err = QueryClient::new().unwrap_err();
    assert!(err.to_string().contains("no runtime feature"), "{err}");
}

#[cfg(feature = "smol")]
#[test]
fn outside_tokio_falls_back_to_smol() {
    let client = QueryClient::new().unwrap();
    let options = QueryOptions::new(key!("s"), || async { Ok::<_, String>(2) });
    assert_eq!(smol::block_on(client.fetch_query(&options)).unwrap(), 2);
}

#[cfg(all(feature = "async-std", not(feature = "smol")))]
#[test]
fn outside_tokio_falls_back_to_async_std() {
    let client = QueryClient::new().unwrap();
    let options = QueryOptions::new(key!("a"), || async { Ok::<_, String>(3) });
    assert_eq!(async_std::task::block_on(client.fetch_query(&options)).unwrap(), 3);
}

#[cfg(any(feature = "sqlite", feature = "redis"))]
#[path = "common/servers.rs"]
mod servers;

/// The command-line tool setup: smol plus the embedded SQLite backend, no tokio anywhere.
#[cfg(all(feature = "smol", feature = "sqlite", not(feature = "tokio")))]
#[test]
fn smol_with_sqlite_persists_across_clients() {
    let dir = servers::ScratchDir::new("facade-sqlite");
    let path = dir.path().join("cli.db");
    let options = QueryOptions::new(key!("answer"), || async { Ok::<_, String>(42u32) })
        .persist()
        .stale_time(std::time::Duration::from_secs(60));
    smol::block_on(async {
        let storage = pystackquery::SqliteStorage::open(&path).unwrap();
        let client =
            QueryClient::with_config(QueryClientConfig::default().storage(storage)).unwrap();
        assert_eq!(client.fetch_query(&options).await.unwrap(), 42);
        client.flush_storage().await;
    });
    smol::block_on(async {
        let storage = pystackquery::SqliteStorage::open(&path).unwrap();
        let client =
            QueryClient::with_config(QueryClientConfig::default().storage(storage)).unwrap();
        let never = QueryOptions::new(key!("answer"), || async { Err::<u32, _>("not called") })
            .persist()
            .stale_time(std::time::Duration::from_secs(60));
        assert_eq!(client.fetch_query(&never).await.unwrap(), 42);
        assert_eq!(client.storage_stats().hits, 1);
    });
}

/// Redis through its smol integration, with tokio not even compiled in.
#[cfg(all(
    feature = "redis",
    any(feature = "smol", feature = "async-std"),
    not(feature = "tokio")
))]
#[test]
fn redis_without_tokio() {
    use pystackquery::storage::StorageBackend;
    let server = match servers::RedisServer::start() {
        Ok(server) => server,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let run = async {
        let storage = pystackquery::RedisStorage::connect(&server.url()).await.unwrap();
        storage.set("('k',)", "v", Some(std::time::Duration::from_secs(5))).await.unwrap();
        assert_eq!(storage.get("('k',)").await.unwrap().as_deref(), Some("v"));
        storage.delete("('k',)").await.unwrap();
        assert_eq!(storage.get("('k',)").await.unwrap(), None);
    };
    #[cfg(feature = "smol")]
    smol::block_on(run);
    #[cfg(not(feature = "smol"))]
    async_std::task::block_on(run);
}
