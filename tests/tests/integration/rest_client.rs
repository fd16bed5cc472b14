//! A plain HTTP client for the REST twins: JSON in, status + JSON out, over HTTP/1.1 or h2c.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Talks JSON to one `host:port`, optionally with an `Api-Key` and an API version header.
#[derive(Clone)]
pub(crate) struct Rest {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    key: Option<String>,
    version: Option<String>,
}

/// A response: status, content type and body (JSON `null` when the body is empty).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<String>,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Value,
}

impl Rest {
    /// HTTP/1.1 to `host` (`host:port`, with or without `http://`), without a key.
    pub(crate) fn new(host: &str) -> Rest {
        Rest::with_client(host, Client::builder(TokioExecutor::new()).build_http())
    }

    /// HTTP/2 with prior knowledge (h2c) to `host`.
    pub(crate) fn h2c(host: &str) -> Rest {
        Rest::with_client(
            host,
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        )
    }

    fn with_client(host: &str, client: Client<HttpConnector, Full<Bytes>>) -> Rest {
        let host = host.strip_prefix("http://").unwrap_or(host);
        Rest {
            client,
            base: format!("http://{host}"),
            key: None,
            version: None,
        }
    }

    /// Sends `Api-Key: key` from now on.
    pub(crate) fn key(mut self, key: &str) -> Rest {
        self.key = Some(key.to_owned());
        self
    }

    /// Sends `X-Pinecone-Api-Version: version` from now on.
    pub(crate) fn version(mut self, version: &str) -> Rest {
        self.version = Some(version.to_owned());
        self
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub(crate) async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(body.to_string().into_bytes()))
            .await
    }

    /// Sends `body` as it is (possibly not JSON at all).
    pub(crate) async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.header("Api-Key", key);
        }
        if let Some(version) = &self.version {
            request = request.header("X-Pinecone-Api-Version", version);
        }
        if body.is_some() {
            request = request.header("Content-Type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = self
            .client
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("{} {path}: {e}", self.base));
        let status = response.status();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            content_type,
            headers,
            body,
        }
    }
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub(crate) fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        self.body
    }
}
