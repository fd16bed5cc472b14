//! What generic gRPC tooling sees on every Larch port: gRPC health (`grpc.health.v1`, as
//! Kubernetes probes use it) and server reflection v1 and v1alpha (as `grpcurl` uses it).

use larch_tests::{TestServer, connect};
use prost::Message as _;
use prost_types::FileDescriptorProto;
use tonic::Code;
use tonic::codegen::tokio_stream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The methods of Pinecone's `VectorService`, in declaration order.
const VECTOR_SERVICE_METHODS: [&str; 12] = [
    "Upsert",
    "Delete",
    "Fetch",
    "List",
    "Query",
    "Update",
    "DescribeIndexStats",
    "ListNamespaces",
    "DescribeNamespace",
    "DeleteNamespace",
    "CreateNamespace",
    "FetchByMetadata",
];

/// The methods of `larch.control.v1.IndexService`, in declaration order.
const INDEX_SERVICE_METHODS: [&str; 5] = [
    "CreateIndex",
    "ListIndexes",
    "DescribeIndex",
    "ConfigureIndex",
    "DeleteIndex",
];

/// The health status of `service` on `host`, asked without an API key.
pub(crate) async fn health(host: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(connect(host).await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(ServingStatus::try_from(response.into_inner().status).expect("a known serving status"))
}

/// The two versions of the reflection protocol Larch serves.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reflection {
    V1,
    V1Alpha,
}

/// One reflection question.
enum Ask<'a> {
    ListServices,
    FileContainingSymbol(&'a str),
}

/// A reflection answer, the same for both protocol versions.
#[derive(Debug)]
enum Answer {
    Services(Vec<String>),
    Files(Vec<FileDescriptorProto>),
}

/// Asks one reflection question on `host` without an API key. The v1 and v1alpha messages
/// have the same shape in different modules, hence the macro.
async fn reflect(host: &str, version: Reflection, ask: Ask<'_>) -> Result<Answer, tonic::Status> {
    macro_rules! ask {
        ($pb:path) => {{
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use $pb as pb;
            let message_request = match ask {
                Ask::ListServices => MessageRequest::ListServices(String::new()),
                Ask::FileContainingSymbol(symbol) => {
                    MessageRequest::FileContainingSymbol(symbol.into())
                }
            };
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message_request),
            };
            let mut client =
                pb::server_reflection_client::ServerReflectionClient::new(connect(host).await);
            let mut answers = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await?
                .into_inner();
            let answer = answers.message().await?.expect("one answer per question");
            match answer.message_response.expect("an answer has a body") {
                MessageResponse::ListServicesResponse(list) => {
                    Answer::Services(list.service.into_iter().map(|s| s.name).collect())
                }
                MessageResponse::FileDescriptorResponse(files) => Answer::Files(
                    files
                        .file_descriptor_proto
                        .iter()
                        .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).unwrap())
                        .collect(),
                ),
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }};
    }
    Ok(match version {
        Reflection::V1 => ask!(tonic_reflection::pb::v1),
        Reflection::V1Alpha => ask!(tonic_reflection::pb::v1alpha),
    })
}

/// The services `host` lists through reflection, sorted.
pub(crate) async fn list_services(
    host: &str,
    version: Reflection,
) -> Result<Vec<String>, tonic::Status> {
    match reflect(host, version, Ask::ListServices).await? {
        Answer::Services(mut services) => {
            services.sort();
            Ok(services)
        }
        other => panic!("expected a service list, got {other:?}"),
    }
}

/// The file that declares `symbol`, among the files reflection returns for it.
async fn file_declaring(
    host: &str,
    version: Reflection,
    symbol: &str,
    service: &str,
) -> FileDescriptorProto {
    match reflect(host, version, Ask::FileContainingSymbol(symbol))
        .await
        .unwrap()
    {
        Answer::Files(files) => files
            .into_iter()
            .find(|f| f.service.iter().any(|s| s.name() == service))
            .unwrap_or_else(|| panic!("no returned file declares {service}")),
        other => panic!("expected files for {symbol}, got {other:?}"),
    }
}

fn method_names(file: &FileDescriptorProto, service: &str) -> Vec<String> {
    let service = file.service.iter().find(|s| s.name() == service).unwrap();
    service.method.iter().map(|m| m.name().to_owned()).collect()
}

#[tokio::test]
async fn health_reports_serving_per_service_on_every_port() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("probe", 2, "cosine").await;
    let control = server.control_addr.to_string();

    assert_eq!(health(&control, "").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        health(&control, "larch.control.v1.IndexService")
            .await
            .unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health(&model.host, "").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health(&model.host, "VectorService").await.unwrap(),
        ServingStatus::Serving
    );

    // Each port knows only its own services.
    for (host, service) in [
        (control.as_str(), "VectorService"),
        (model.host.as_str(), "larch.control.v1.IndexService"),
        (control.as_str(), "no.such.Service"),
    ] {
        let status = health(host, service).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::NotFound,
            "{host} {service}: {status:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_services_on_both_planes_in_both_versions() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("explore", 2, "cosine").await;
    let control = server.control_addr.to_string();
    for (version, reflection_service) in [
        (Reflection::V1, "grpc.reflection.v1.ServerReflection"),
        (
            Reflection::V1Alpha,
            "grpc.reflection.v1alpha.ServerReflection",
        ),
    ] {
        // Every Larch port describes every Larch proto, so grpcurl can explore from any of them.
        let expected = [
            "VectorService",
            "grpc.health.v1.Health",
            reflection_service,
            "larch.control.v1.ApiKeyService",
            "larch.control.v1.BackupService",
            "larch.control.v1.IndexService",
            "larch.control.v1.ProjectService",
        ];
        for host in [&control, &model.host] {
            let services = list_services(host, version).await.unwrap();
            assert_eq!(services, expected, "{version:?} on {host}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_describes_the_package_less_vector_service() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("symbols", 2, "cosine").await;
    let control = server.control_addr.to_string();
    for version in [Reflection::V1, Reflection::V1Alpha] {
        for host in [&model.host, &control] {
            let file = file_declaring(host, version, "VectorService", "VectorService").await;
            assert_eq!(file.package(), "", "Pinecone's data plane has no package");
            assert_eq!(file.name(), "vector_service.proto");
            assert_eq!(method_names(&file, "VectorService"), VECTOR_SERVICE_METHODS);
            // A method symbol resolves to the same file.
            let by_method =
                file_declaring(host, version, "VectorService.Query", "VectorService").await;
            assert_eq!(by_method, file);

            let file = file_declaring(
                host,
                version,
                "larch.control.v1.IndexService",
                "IndexService",
            )
            .await;
            assert_eq!(file.package(), "larch.control.v1");
            assert_eq!(method_names(&file, "IndexService"), INDEX_SERVICE_METHODS);

            // tonic's reflection service ends the stream with NOT_FOUND for an unknown symbol.
            let status = reflect(host, version, Ask::FileContainingSymbol("NoSuchService"))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert_eq!(status.message(), "symbol 'NoSuchService' not found");
        }
    }
    server.stop().await;
}

/// Health status of `service` on `host`.
async fn health_of(host: &str, service: &str) -> i32 {
    HealthClient::new(connect(host).await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn control_plane_is_not_serving_until_recovery_completes() {
    let key = "recovery-test-key";
    let recovering = larch_tests::Recovering::start(key).await;
    let addr = recovering.addr.clone();

    // Recovering: the port answers, health says NOT_SERVING, index calls are UNAVAILABLE.
    for service in ["", "larch.control.v1.IndexService"] {
        assert_eq!(
            health_of(&addr, service).await,
            ServingStatus::NotServing as i32
        );
    }
    let mut control =
        larch_proto::control::index_service_client::IndexServiceClient::new(connect(&addr).await);
    let mut request = tonic::Request::new(larch_proto::control::ListIndexesRequest {});
    request
        .metadata_mut()
        .insert("api-key", key.parse().unwrap());
    let err = control.list_indexes(request).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("recovering"), "{}", err.message());

    // Recovered: SERVING, and the same connection now gets answers.
    let server = recovering.finish();
    larch_tests::wait_serving(&addr).await;
    let mut request = tonic::Request::new(larch_proto::control::ListIndexesRequest {});
    request
        .metadata_mut()
        .insert("api-key", key.parse().unwrap());
    assert!(
        control
            .list_indexes(request)
            .await
            .unwrap()
            .into_inner()
            .indexes
            .is_empty()
    );
    server.abort();
}

#[tokio::test]
async fn control_plane_stops_when_recovery_fails() {
    let dir = tempfile::tempdir().unwrap();
    let admin = std::sync::Arc::new(larch_auth::bootstrap(dir.path(), Some("k")).unwrap().admin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // `None`: recovery failed; the server must stop on its own instead of serving nothing.
    let stopped = larch_control_plane::serve(
        listener,
        async { None },
        admin,
        larch_control_plane::Metrics::new(),
        larch_control_plane::Limits::default(),
        std::future::pending(),
    );
    tokio::time::timeout(std::time::Duration::from_secs(10), stopped)
        .await
        .expect("the server stops")
        .unwrap();
}
