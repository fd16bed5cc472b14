//! Nothing is deleted because something is missing (issue 14, item 2): a data dir whose
//! `catalog.json` is gone makes `larch serve` refuse to start (exit 64) instead of starting
//! empty, and an index directory the catalog does not list is moved into `quarantine/`, never
//! deleted.

use std::path::Path;

use larch_proto::control::CreateIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;

use super::harness::*;

use super::split::{KEY, upsert_a};

/// The directories under `dir`, sorted (empty if it does not exist).
pub(super) fn dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_type().unwrap().is_dir())
            .map(|entry| entry.file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Starts `larch serve` on `data_dir` and waits until it serves; returns it with its control
/// address.
async fn serve(data_dir: &Path) -> (Larch, String) {
    let larch = Larch::serve(data_dir, &[("LARCH_API_KEY", KEY)]);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    (larch, addr)
}

/// Creates index `name` (dimension 2, cosine); returns its host.
async fn create(addr: &str, name: &str) -> String {
    IndexServiceClient::new(connect(addr).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: name.into(),
                dimension: Some(2),
                metric: Some("cosine".into()),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .host
}

/// Creates index `name` (dimension 2) and upserts vector `a` into it.
async fn create_with_a(addr: &str, name: &str) {
    let host = create(addr, name).await;
    wait_serving(&host, "").await;
    upsert_a(&mut VectorServiceClient::new(connect(&host).await)).await;
}

/// The ids of `ids` that index `name` holds.
async fn fetch(addr: &str, name: &str, ids: &[&str]) -> Vec<String> {
    let host = IndexServiceClient::new(connect(addr).await)
        .describe_index(with_key(
            larch_proto::control::DescribeIndexRequest { name: name.into() },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .host;
    wait_serving(&host, "").await;
    let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    fetch_ids(
        &mut VectorServiceClient::new(connect(&host).await),
        &ids,
        KEY,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_missing_catalog_refuses_to_start_with_64_and_deletes_nothing() {
    let data_dir = tempfile::tempdir().unwrap();
    let indexes = data_dir.path().join("indexes");
    let (mut larch, addr) = serve(data_dir.path()).await;
    create_with_a(&addr, "keep").await;
    assert!(larch.terminate().success(), "stderr:\n{}", larch.stderr());
    let stored = dirs(&indexes);
    assert_eq!(stored.len(), 1, "{stored:?}");

    // A partial restore or an operator mistake: the catalog is gone, the data is not.
    let catalog = data_dir.path().join("catalog.json");
    let aside = data_dir.path().join("catalog.json.aside");
    std::fs::rename(&catalog, &aside).unwrap();
    let mut refused = Larch::serve(data_dir.path(), &[("LARCH_API_KEY", KEY)]);
    let status = refused.wait();
    let stderr = refused.stderr();
    assert_eq!(status.code(), Some(64), "stderr:\n{stderr}");
    for named in [stored[0].as_str(), "catalog.json", "move these directories"] {
        assert!(stderr.contains(named), "{named:?} in stderr:\n{stderr}");
    }
    assert_eq!(dirs(&indexes), stored, "nothing deleted");
    assert!(!catalog.exists(), "no empty catalog written");

    // The catalog restored: the index and its data are back.
    std::fs::rename(&aside, &catalog).unwrap();
    let (mut larch, addr) = serve(data_dir.path()).await;
    assert_eq!(fetch(&addr, "keep", &["a"]).await, ["a"]);
    assert!(larch.terminate().success(), "stderr:\n{}", larch.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_an_index_directory_the_catalog_does_not_list_is_quarantined() {
    let data_dir = tempfile::tempdir().unwrap();
    let indexes = data_dir.path().join("indexes");
    let (mut larch, addr) = serve(data_dir.path()).await;
    create_with_a(&addr, "keep").await;
    let kept = dirs(&indexes);
    create_with_a(&addr, "gone").await;
    assert!(larch.terminate().success(), "stderr:\n{}", larch.stderr());
    let unlisted: Vec<String> = dirs(&indexes)
        .into_iter()
        .filter(|dir| !kept.contains(dir))
        .collect();
    assert_eq!(unlisted.len(), 1, "{unlisted:?}");

    // An older catalog (e.g. restored from a backup taken before "gone" was created).
    let catalog = data_dir.path().join("catalog.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&catalog).unwrap()).unwrap();
    json["indexes"]
        .as_array_mut()
        .unwrap()
        .retain(|index| index["name"] != "gone");
    std::fs::write(&catalog, serde_json::to_vec(&json).unwrap()).unwrap();

    let (mut larch, addr) = serve(data_dir.path()).await;
    assert_eq!(fetch(&addr, "keep", &["a"]).await, ["a"]);
    assert_eq!(dirs(&indexes), kept, "the unlisted directory is moved away");
    let quarantined = dirs(&data_dir.path().join("quarantine"));
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        quarantined[0].starts_with(&format!("{}-", unlisted[0])),
        "{quarantined:?}"
    );
    let moved = data_dir.path().join("quarantine").join(&quarantined[0]);
    assert!(moved.join("index.meta").is_file(), "its data is intact");
    let stderr = larch.stderr();
    let warning = stderr
        .lines()
        .find(|line| line.contains("moved it aside"))
        .unwrap_or_else(|| panic!("a warning in stderr:\n{stderr}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&unlisted[0]), "{warning}");
    assert!(!stderr.contains("removing data of an index"), "{stderr}");
    assert!(larch.terminate().success(), "stderr:\n{}", larch.stderr());
}

/// Deletes index `name` on the control plane at `addr`.
async fn delete(addr: &str, name: &str, key: &str) {
    IndexServiceClient::new(connect(addr).await)
        .delete_index(with_key(
            larch_proto::control::DeleteIndexRequest { name: name.into() },
            Some(key),
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_name_deleted_and_created_again_is_empty_and_has_fresh_storage() {
    let data_dir = tempfile::tempdir().unwrap();
    let indexes = data_dir.path().join("indexes");
    let (mut larch, addr) = serve(data_dir.path()).await;
    create_with_a(&addr, "again").await;
    let first = dirs(&indexes);
    delete(&addr, "again", KEY).await;
    assert!(dirs(&indexes).is_empty(), "{:?}", dirs(&indexes));
    IndexServiceClient::new(connect(&addr).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: "again".into(),
                dimension: Some(2),
                metric: Some("euclidean".into()),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap();
    assert!(
        fetch(&addr, "again", &["a"]).await.is_empty(),
        "no old data"
    );
    let second = dirs(&indexes);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second, "a fresh directory");
    assert!(larch.terminate().success(), "stderr:\n{}", larch.stderr());
}

mod split {
    //! The same in split mode, where the data plane is another process that may be down when
    //! an index is deleted.

    use std::path::Path;
    use std::time::Duration;

    use larch_proto::pinecone::vector_service_client::VectorServiceClient;
    use larch_proto::pinecone::{FetchRequest, QueryRequest};

    use super::super::harness::*;
    use super::super::split::{KEY, eventually, start_data_plane, upsert_a, via_host};
    use super::{create, delete, dirs};

    /// A control plane on a reserved port, for a data plane at `data_addr`.
    fn start_control_plane(dir: &Path, port: u16, data_addr: &str) -> Larch {
        let template = format!(
            "{{index}}.{{project}}.larch.test:{}",
            data_addr.rsplit(':').next().unwrap()
        );
        Larch::spawn(
            &[
                "control-plane",
                "--data-dir",
                dir.to_str().unwrap(),
                "--control-addr",
                &format!("127.0.0.1:{port}"),
                "--data-plane-url",
                &format!("http://{data_addr}"),
                "--host-template",
                &template,
            ],
            &[("LARCH_API_KEY", KEY)],
        )
    }

    async fn count(data_addr: &str, host: &str) -> usize {
        VectorServiceClient::new(via_host(data_addr, host).await)
            .query(with_key(
                QueryRequest {
                    vector: vec![1.0, 0.0],
                    top_k: 5,
                    ..Default::default()
                },
                Some(KEY),
            ))
            .await
            .unwrap()
            .into_inner()
            .matches
            .len()
    }

    /// The tombstones in the control plane's catalog file.
    fn tombstones(control_dir: &Path) -> usize {
        let bytes = std::fs::read(control_dir.join("catalog.json")).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        json.get("tombstones")
            .and_then(|t| t.as_array())
            .map_or(0, Vec::len)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue_14_a_delete_the_data_plane_missed_is_done_when_it_comes_back() {
        let (control_dir, data_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let indexes = data_dir.path().join("indexes");
        let control_port = free_port();
        let mut data = start_data_plane(data_dir.path(), "127.0.0.1:0", control_port);
        let data_addr = data.logged_addr("larch data plane listening").to_string();
        let control = start_control_plane(control_dir.path(), control_port, &data_addr);
        let control_addr = control.control_addr().to_string();
        wait_serving(&control_addr, "").await;
        wait_serving(&data_addr, "").await;

        // Delete and create again while the data plane is up: the new index is empty.
        let host = create(&control_addr, "movies").await;
        let mut client = VectorServiceClient::new(via_host(&data_addr, &host).await);
        upsert_a(&mut client).await;
        drop(client);
        delete(&control_addr, "movies", KEY).await;
        assert!(dirs(&indexes).is_empty(), "{:?}", dirs(&indexes));
        let host = create(&control_addr, "movies").await;
        assert_eq!(count(&data_addr, &host).await, 0, "no old data");
        let mut client = VectorServiceClient::new(via_host(&data_addr, &host).await);
        upsert_a(&mut client).await;
        drop(client);
        let stored = dirs(&indexes);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(tombstones(control_dir.path()), 0);

        // The data plane is down during the delete: the delete succeeds, the data stays for
        // now and a tombstone remembers it.
        assert!(data.terminate().success(), "stderr:\n{}", data.stderr());
        delete(&control_addr, "movies", KEY).await;
        assert_eq!(dirs(&indexes), stored, "nothing could remove it yet");
        assert_eq!(tombstones(control_dir.path()), 1);

        // Back: the name can be created again at once (whether or not the data plane has
        // acted on the tombstone yet), with fresh storage.
        let data = start_data_plane(data_dir.path(), &data_addr, control_port);
        assert_eq!(
            data.logged_addr("larch data plane listening").to_string(),
            data_addr
        );
        create(&control_addr, "movies").await;
        wait_serving(&data_addr, "").await;
        eventually(
            Duration::from_secs(20),
            "the deleted index's data removed and the tombstone forgotten",
            async || !dirs(&indexes).contains(&stored[0]) && tombstones(control_dir.path()) == 0,
        )
        .await;
        // The new index is served, empty.
        let mut fresh = VectorServiceClient::new(via_host(&data_addr, &host).await);
        let fetched = fresh
            .fetch(with_key(
                FetchRequest {
                    ids: vec!["a".into()],
                    namespace: String::new(),
                },
                Some(KEY),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(fetched.vectors.is_empty(), "{fetched:?}");
        assert!(
            data.stderr()
                .contains("removed the data of a deleted index"),
            "{}",
            data.stderr()
        );
        drop(data);
        drop(control);
    }
}
