//! Two replicas (two `Catalog`s) over one shared directory, as two control-plane pods over one
//! volume; they share one data plane, as in a deployment.

use std::sync::Barrier;
use std::thread;

use super::*;

fn replica(dir: &Path, dp: &Arc<FakeDataPlane>) -> Catalog {
    let doc = SharedDocument::local(dir, "catalog").unwrap();
    let template = HostTemplate::parse("{index}.{project}.data.test:5081").unwrap();
    Catalog::open_shared(doc, dp.clone(), template).unwrap()
}

fn names(catalog: &Catalog) -> Vec<String> {
    catalog
        .list_indexes(P)
        .unwrap()
        .into_iter()
        .map(|r| r.name.to_string())
        .collect()
}

#[test]
fn what_one_replica_changes_the_other_reads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Arc::new(FakeDataPlane::default());
    let (a, b) = (replica(dir.path(), &dp), replica(dir.path(), &dp));

    let created = a.create_index(P, create("movies")).unwrap();
    assert_eq!(created.host, "movies.default.data.test:5081");
    assert!(dp.attached.lock().unwrap().contains_key("movies"));
    assert_eq!(b.describe_index(P, "movies").unwrap(), created);
    assert_eq!(names(&b), ["movies"]);

    // Configured through b, protected: a refuses to delete it.
    let request = ConfigureIndex {
        name: "movies".into(),
        deletion_protection: Some("enabled".into()),
        tags: BTreeMap::from([("team".into(), "search".into())]),
        search: SearchSettings {
            ef_search: Some(200),
            ..SearchSettings::default()
        },
    };
    let configured = b.configure_index(P, request).unwrap();
    assert_eq!(dp.search_of("movies").unwrap().ef_search(), 200);
    assert_eq!(a.describe_index(P, "movies").unwrap(), configured);
    let err = a.delete_index(P, "movies").unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");

    let request = ConfigureIndex {
        name: "movies".into(),
        deletion_protection: Some("disabled".into()),
        ..ConfigureIndex::default()
    };
    a.configure_index(P, request).unwrap();
    b.delete_index(P, "movies").unwrap();
    assert!(names(&a).is_empty());
    assert!(dp.attached.lock().unwrap().is_empty());
    assert!(matches!(
        a.describe_index(P, "movies"),
        Err(Error::NotFound(_))
    ));

    // A third replica starting now reads the same.
    b.create_index(P, create("books")).unwrap();
    assert_eq!(names(&replica(dir.path(), &dp)), ["books"]);
}

#[test]
fn the_same_name_created_on_two_replicas_at_once_exists_once() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let replicas = [replica(dir.path(), &dp), replica(dir.path(), &dp)];
        let start = Barrier::new(2);
        let results: Vec<Result<IndexRecord>> = thread::scope(|scope| {
            let handles: Vec<_> = replicas
                .iter()
                .map(|catalog| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        catalog.create_index(P, create("movies"))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created = results.iter().filter(|r| r.is_ok()).count();
        let exists = results
            .iter()
            .filter(|r| matches!(r, Err(Error::AlreadyExists(_))))
            .count();
        assert_eq!((created, exists), (1, 1), "round {round}: {results:?}");
        for catalog in &replicas {
            assert_eq!(names(catalog), ["movies"]);
        }
    }
}

#[test]
fn concurrent_creates_on_two_replicas_lose_none() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Arc::new(FakeDataPlane::default());
    let replicas = [replica(dir.path(), &dp), replica(dir.path(), &dp)];
    thread::scope(|scope| {
        for (r, catalog) in replicas.iter().enumerate() {
            scope.spawn(move || {
                for i in 0..20 {
                    catalog
                        .create_index(P, create(&format!("r{r}-i{i}")))
                        .unwrap();
                }
            });
        }
    });
    let mut expected: Vec<String> = (0..2)
        .flat_map(|r| (0..20).map(move |i| format!("r{r}-i{i}")))
        .collect();
    expected.sort();
    for catalog in &replicas {
        assert_eq!(names(catalog), expected);
        assert_eq!(catalog.all_indexes().unwrap().len(), 40);
    }
    assert_eq!(dp.attached.lock().unwrap().len(), 40);
}

#[test]
fn an_index_the_data_plane_refuses_is_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0 "in use": the data plane refuses every attach.
    let dp = Arc::new(FakeDataPlane {
        busy: BTreeSet::from([0]),
        ..FakeDataPlane::default()
    });
    let (a, b) = (replica(dir.path(), &dp), replica(dir.path(), &dp));
    let err = a.create_index(P, create("movies")).unwrap_err();
    assert!(matches!(err, Error::NoFreePort(_)), "{err}");
    assert!(names(&a).is_empty());
    assert!(names(&b).is_empty());
}

#[test]
fn a_damaged_shared_catalog_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Arc::new(FakeDataPlane::default());
    let a = replica(dir.path(), &dp);
    a.create_index(P, create("movies")).unwrap();
    let doc = SharedDocument::local(dir.path(), "catalog").unwrap();
    assert_eq!(
        doc.write_next(1, b"{not json".to_vec()).unwrap(),
        Written::Done(2)
    );
    let err = a.list_indexes(P).unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err}");
    assert!(err.to_string().contains("catalog"), "{err}");
}

#[test]
fn search_parameters_the_data_plane_refuses_are_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Arc::new(FakeDataPlane::default());
    let a = replica(dir.path(), &dp);
    let before = a.create_index(P, create("movies")).unwrap();
    // b's data plane does not serve the index, so it refuses the new parameters.
    let b = replica(dir.path(), &Arc::new(FakeDataPlane::default()));
    let request = ConfigureIndex {
        name: "movies".into(),
        search: SearchSettings {
            ef_search: Some(300),
            ..SearchSettings::default()
        },
        ..ConfigureIndex::default()
    };
    let err = b.configure_index(P, request).unwrap_err();
    assert!(matches!(err, Error::DataPlane(_)), "{err}");
    assert_eq!(a.describe_index(P, "movies").unwrap(), before);
    assert_eq!(b.describe_index(P, "movies").unwrap(), before);
}
