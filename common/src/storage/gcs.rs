//! Google Cloud Storage backend.
//!
//! Object bodies go through the official `google-cloud-storage` client (`write_object` with
//! `send_buffered`, `read_object` with ranges): it brings checksums, resumable uploads and retries.
//!
//! Metadata, delete and the bucket probe go through the GCS **JSON API** with the same credentials
//! instead: in `google-cloud-storage` 1.21 those operations exist only on `StorageControl`, which
//! speaks gRPC (`google.storage.v2`), and fake-gcs-server, the emulator the tests run against,
//! answers only the HTTP APIs. The JSON API is the same public, stable interface on the real
//! service, so one code path serves both.
//!
//! The crate ignores `STORAGE_EMULATOR_HOST`; an emulator is selected by passing its endpoint, in
//! which case requests are anonymous. Without an endpoint, Application Default Credentials are
//! used (Workload Identity on GKE).

use std::time::Duration;

use bytes::Bytes;
use google_cloud_auth::credentials::{anonymous, CacheableResource, Credentials};
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage as GcsClient;
use google_cloud_storage::model_ext::ReadRange;
use google_cloud_storage::retry_policy::RetryableErrors;

use super::{ObjectKey, ObjectReader, Storage};
use crate::{Error, Result};

/// The public endpoint of the real service.
const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";

/// How long one storage operation may keep retrying transient errors before it fails: long
/// enough to ride out a blip, short enough that a request or readiness probe answers.
const RETRY_BUDGET: Duration = Duration::from_secs(15);

/// Objects in one GCS bucket.
#[derive(Clone)]
pub struct GcsStorage {
    client: GcsClient,
    http: reqwest::Client,
    credentials: Credentials,
    endpoint: String,
    bucket: String,
}

impl std::fmt::Debug for GcsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStorage")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl GcsStorage {
    /// A backend on `bucket`. `endpoint` (e.g. `http://127.0.0.1:4443` for fake-gcs-server)
    /// switches to anonymous credentials; `None` means the real service with Application Default
    /// Credentials. Does not contact the service: [`Storage::check`] does.
    pub async fn new(bucket: &str, endpoint: Option<&str>) -> Result<Self> {
        if bucket.is_empty() {
            return Err(Error::Invalid {
                what: "GCS bucket",
                value: String::new(),
            });
        }
        let credentials = match endpoint {
            Some(_) => anonymous::Builder::new().build(),
            None => google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| Error::Storage(format!("GCS credentials: {e}")))?,
        };
        let endpoint = endpoint
            .unwrap_or(GOOGLE_ENDPOINT)
            .trim_end_matches('/')
            .to_owned();
        let client = GcsClient::builder()
            .with_endpoint(endpoint.clone())
            .with_credentials(credentials.clone())
            .with_retry_policy(RetryableErrors.with_time_limit(RETRY_BUDGET))
            .build()
            .await
            .map_err(|e| Error::Storage(format!("GCS client: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(RETRY_BUDGET)
            .build()
            .map_err(|e| Error::Storage(format!("HTTP client: {e}")))?;
        Ok(GcsStorage {
            client,
            http,
            credentials,
            endpoint,
            bucket: bucket.to_owned(),
        })
    }

    /// The bucket in the resource-name form the client library expects.
    fn bucket_resource(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    /// JSON API URL of an object's metadata (`/storage/v1/b/<bucket>/o/<object>`), the object
    /// name percent-encoded as one path segment.
    fn object_url(&self, key: &ObjectKey) -> Result<reqwest::Url> {
        let mut url = self.bucket_url()?;
        url.path_segments_mut()
            .map_err(|()| Error::Storage(format!("bad GCS endpoint {:?}", self.endpoint)))?
            .push("o")
            .push(key.as_str());
        Ok(url)
    }

    /// JSON API URL of the bucket's metadata.
    fn bucket_url(&self) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| Error::Storage(format!("bad GCS endpoint {:?}: {e}", self.endpoint)))?;
        url.path_segments_mut()
            .map_err(|()| Error::Storage(format!("bad GCS endpoint {:?}", self.endpoint)))?
            .pop_if_empty()
            .extend(["storage", "v1", "b", self.bucket.as_str()]);
        Ok(url)
    }

    /// Sends a JSON API request with the backend's credentials.
    async fn json_api(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
    ) -> Result<reqwest::Response> {
        let headers = match self
            .credentials
            .headers(http::Extensions::new())
            .await
            .map_err(|e| Error::Storage(format!("GCS credentials: {e}")))?
        {
            CacheableResource::New { data, .. } => data,
            // Only returned when we pass an entity tag, which we never do.
            CacheableResource::NotModified => http::HeaderMap::new(),
        };
        self.http
            .request(method, url)
            .headers(headers)
            .send()
            .await
            .map_err(|e| Error::Storage(format!("GCS: {e}")))
    }
}

/// Maps a client-library error, turning HTTP 404 into [`Error::NotFound`].
fn lib_error(key: &ObjectKey, e: google_cloud_storage::Error) -> Error {
    if e.http_status_code() == Some(404) {
        Error::NotFound(key.to_string())
    } else {
        Error::Storage(format!("GCS {key}: {e}"))
    }
}

/// Turns an unexpected JSON API status into an error carrying the service's explanation.
async fn status_error(what: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Error::Storage(format!(
        "GCS {what}: HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    ))
}

#[async_trait::async_trait]
impl Storage for GcsStorage {
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        // A single-request upload is atomic on GCS: the object appears whole or not at all.
        self.client
            .write_object(self.bucket_resource(), key.as_str(), data)
            .set_content_type("audio/mpeg")
            .send_buffered()
            .await
            .map_err(|e| lib_error(key, e))?;
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let mut resp = self
            .client
            .read_object(self.bucket_resource(), key.as_str())
            .send()
            .await
            .map_err(|e| lib_error(key, e))?;
        let mut out = Vec::with_capacity(usize::try_from(resp.object().size).unwrap_or(0));
        while let Some(chunk) = resp.next().await {
            out.extend_from_slice(&chunk.map_err(|e| lib_error(key, e))?);
        }
        Ok(Bytes::from(out))
    }

    async fn read(&self, key: &ObjectKey, range: Option<(u64, u64)>) -> Result<ObjectReader> {
        // The read response's size header is not served by every emulator, and a ranged read
        // cannot be clamped without the size: ask the metadata first, then read that very
        // generation, so a concurrent overwrite cannot pair one version's size with another's
        // bytes.
        let Meta { size, generation } = self.meta(key).await?;
        let (start, end) = range.unwrap_or((0, size));
        let (start, end) = (start.min(size), end.min(size));
        if start >= end {
            return Ok(ObjectReader {
                size,
                body: Box::pin(futures::stream::empty()),
            });
        }
        let resp = self
            .client
            .read_object(self.bucket_resource(), key.as_str())
            .set_generation(generation)
            .set_read_range(ReadRange::segment(start, end - start))
            .send()
            .await
            .map_err(|e| lib_error(key, e))?;
        let key = key.clone();
        let body = futures::stream::unfold(Some(resp), move |state| {
            let key = key.clone();
            async move {
                let mut resp = state?;
                match resp.next().await? {
                    Ok(chunk) => Some((Ok(chunk), Some(resp))),
                    Err(e) => Some((Err(lib_error(&key, e)), None)),
                }
            }
        });
        Ok(ObjectReader {
            size,
            body: Box::pin(body),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool> {
        let resp = self
            .json_api(reqwest::Method::DELETE, self.object_url(key)?)
            .await?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(status_error(&format!("delete {key}"), resp).await),
        }
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool> {
        match self.meta(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn check(&self) -> Result<()> {
        let resp = self
            .json_api(reqwest::Method::GET, self.bucket_url()?)
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&format!("bucket {}", self.bucket), resp).await)
        }
    }
}

/// What the backend needs from an object's metadata.
struct Meta {
    /// Bytes.
    size: u64,
    /// The object version.
    generation: i64,
}

impl GcsStorage {
    /// The object's size and generation, from its JSON API metadata.
    async fn meta(&self, key: &ObjectKey) -> Result<Meta> {
        // The JSON API encodes int64 as decimal strings.
        #[derive(serde::Deserialize)]
        struct Wire {
            size: String,
            generation: String,
        }
        let resp = self
            .json_api(reqwest::Method::GET, self.object_url(key)?)
            .await?;
        match resp.status().as_u16() {
            200..=299 => {
                let bad = |e: &dyn std::fmt::Display| {
                    Error::Storage(format!("GCS metadata of {key}: {e}"))
                };
                let wire: Wire = resp.json().await.map_err(|e| bad(&e))?;
                Ok(Meta {
                    size: wire.size.parse().map_err(|e| bad(&e))?,
                    generation: wire.generation.parse().map_err(|e| bad(&e))?,
                })
            }
            404 => Err(Error::NotFound(key.to_string())),
            _ => Err(status_error(&format!("metadata of {key}"), resp).await),
        }
    }
}
