//! [`ObjectStorage`]: checkpoint files on object storage through the `object_store` crate — S3
//! and S3-compatible servers (cargo feature `s3`); any other `object_store` backend (GCS,
//! Azure, memory, or a wrapper such as its throttling one) plugs in through
//! [`ObjectStorage::with_store`].
//!
//! How the storage contract maps onto objects:
//! - **Atomic visibility**: a single PUT is atomic on object stores; large files go up as
//!   multipart uploads, invisible until completed, aborted on any error so no parts are left
//!   behind to bill.
//! - **Publish-once**: [`put_new`](CheckpointStorage::put_new) is a conditional PUT
//!   (`If-None-Match: *`, object_store's `PutMode::Create`), so a manifest is never
//!   overwritten; the latest completed checkpoint is found by listing, never through a mutable
//!   pointer object.
//! - **Failures**: object_store retries transient errors (5xx, timeouts, dropped connections)
//!   with exponential backoff up to [`ObjectStorageOptions::retries`] times within
//!   [`ObjectStorageOptions::retry_timeout`]; each request has a deadline
//!   ([`ObjectStorageOptions::timeout`]). Permanent errors come back typed: no credentials or
//!   access denied ([`CheckpointError::AccessDenied`]), no bucket
//!   ([`CheckpointError::NoBucket`]), anything else after the retries
//!   ([`CheckpointError::Remote`]).
//!
//! The trait is synchronous (checkpoints upload from a background thread); each storage owns a
//! small tokio runtime and blocks on it.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};

use super::{CheckpointStorage, FileInfo};
use crate::checkpoint::format::path::check_path;
use crate::error::{CheckpointError, Error, Result};

/// How an [`ObjectStorage`] talks to its store. Start from [`Default`] and set fields (the
/// struct may gain fields, so it is not built by a literal outside this crate):
///
/// ```
/// use keyed_state::checkpoint::ObjectStorageOptions;
/// let mut options = ObjectStorageOptions::default().with("aws_region", "eu-west-1");
/// options.retries = 2;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ObjectStorageOptions {
    /// Settings by object_store's names (`aws_endpoint`, `aws_region`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_allow_http`, `aws_virtual_hosted_style_request`, …), applied
    /// over the `AWS_*` environment variables the AWS tools read.
    pub settings: Vec<(String, String)>,
    /// Deadline of one request.
    pub timeout: Duration,
    /// Retries of a transient failure.
    pub retries: usize,
    /// No retry starts after this long from the first attempt.
    pub retry_timeout: Duration,
    /// Files at least this large go up as multipart uploads.
    pub multipart_threshold: u64,
    /// The part size of multipart uploads (memory per upload ≈ part size × part concurrency).
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub part_concurrency: usize,
    /// Files of one checkpoint transferred at once (uploads, restore downloads).
    pub transfers: usize,
}

impl Default for ObjectStorageOptions {
    fn default() -> Self {
        ObjectStorageOptions {
            settings: Vec::new(),
            timeout: Duration::from_secs(60),
            retries: 5,
            retry_timeout: Duration::from_secs(120),
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            part_concurrency: 4,
            transfers: 8,
        }
    }
}

impl ObjectStorageOptions {
    /// Adds one object_store setting (see [`settings`](Self::settings)).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }
}

/// See the module documentation.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    runtime: tokio::runtime::Runtime,
    options: ObjectStorageOptions,
}

impl ObjectStorage {
    /// Opens `s3://bucket/prefix` with `options` over the `AWS_*` environment.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::StorageConfig`](crate::CheckpointError::StorageConfig) for a URL that
    /// is not `s3://bucket/prefix` or an unknown setting; the runtime could not start
    /// ([`Error::Io`](crate::Error::Io)).
    pub fn open(url: &str, options: ObjectStorageOptions) -> Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            CheckpointError::StorageConfig(format!("{url}: only s3:// URLs are object storage"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(CheckpointError::StorageConfig(format!("{url}: no bucket")).into());
        }
        // Client options first: the environment and the settings may refine them
        // (`aws_allow_http`, …), while `with_client_options` would replace them wholesale.
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: options.retries,
                retry_timeout: options.retry_timeout,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(options.timeout)
                    .with_connect_timeout(options.timeout.min(Duration::from_secs(10))),
            );
        // The AWS tools' environment (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT, …).
        for (key, value) in std::env::vars() {
            if key.starts_with("AWS_")
                && let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                builder = builder.with_config(key, value);
            }
        }
        for (key, value) in &options.settings {
            let key: AmazonS3ConfigKey = key.parse().map_err(|e| {
                CheckpointError::StorageConfig(format!("{url}: setting {key}: {e}"))
            })?;
            builder = builder.with_config(key, value);
        }
        let store = builder
            .build()
            .map_err(|e| CheckpointError::StorageConfig(format!("{url}: {e}")))?;
        Self::with_store(Arc::new(store), url, prefix, options)
    }

    /// Storage over any object_store backend, under `prefix` (`""`: the root). `url` names it
    /// in errors and `Debug`.
    ///
    /// # Errors
    ///
    /// The runtime could not start ([`Error::Io`](crate::Error::Io)).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        url: &str,
        prefix: &str,
        options: ObjectStorageOptions,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-storage")
            .enable_all()
            .build()?;
        Ok(ObjectStorage {
            store,
            prefix: ObjectPath::from(prefix.trim_matches('/')),
            url: url.to_owned(),
            runtime,
            options,
        })
    }

    /// The storage URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn location(&self, path: &str) -> Result<ObjectPath> {
        check_path(path)?;
        Ok(path
            .split('/')
            .fold(self.prefix.clone(), |at, part| at.join(part)))
    }

    /// Our path of an object's location under the prefix.
    fn relative(&self, location: &ObjectPath) -> Option<String> {
        let parts: Vec<String> = location
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_owned())
            .collect();
        Some(parts.join("/"))
    }

    fn error(&self, op: &'static str, path: &str, e: object_store::Error) -> Error {
        let reason = e.to_string();
        let lower = reason.to_ascii_lowercase();
        let err = match e {
            object_store::Error::NotFound { .. } if op != "list" => CheckpointError::Missing {
                path: path.to_owned(),
            },
            object_store::Error::AlreadyExists { .. } => CheckpointError::AlreadyExists {
                path: path.to_owned(),
            },
            _ if lower.contains("nosuchbucket") || lower.contains("no such bucket") => {
                CheckpointError::NoBucket {
                    url: self.url.clone(),
                    reason,
                }
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => CheckpointError::AccessDenied {
                url: self.url.clone(),
                reason,
            },
            _ if [
                "accessdenied",
                "invalidaccesskeyid",
                "signaturedoesnotmatch",
                "403 forbidden",
            ]
            .iter()
            .any(|s| lower.contains(s)) =>
            {
                CheckpointError::AccessDenied {
                    url: self.url.clone(),
                    reason,
                }
            }
            _ => CheckpointError::Remote {
                url: self.url.clone(),
                op,
                path: path.to_owned(),
                reason,
            },
        };
        err.into()
    }

    fn put_mode(&self, path: &str, bytes: &[u8], mode: PutMode) -> Result<()> {
        let location = self.location(path)?;
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.runtime
            .block_on(self.store.put_opts(&location, payload, options))
            .map_err(|e| self.error("put", path, e))?;
        Ok(())
    }

    /// A multipart upload of `source`, `part_size` at a time with at most `part_concurrency`
    /// parts in flight; aborted on any error.
    fn put_multipart(
        &self,
        path: &str,
        location: &ObjectPath,
        source: &mut File,
    ) -> Result<FileInfo> {
        let o = &self.options;
        self.runtime.block_on(async {
            let upload = self
                .store
                .put_multipart(location)
                .await
                .map_err(|e| self.error("put", path, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, o.part_size);
            let mut hasher = crc32fast::Hasher::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; o.part_size.clamp(1 << 16, 64 << 20)];
            let result: Result<()> = async {
                loop {
                    let n = source.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    hasher.update(&buf[..n]);
                    size += n as u64;
                    writer
                        .wait_for_capacity(o.part_concurrency.max(1))
                        .await
                        .map_err(|e| self.error("put", path, e))?;
                    writer.write(&buf[..n]);
                }
            }
            .await;
            match result {
                Ok(()) => {
                    writer
                        .finish()
                        .await
                        .map_err(|e| self.error("put", path, e))?;
                    Ok(FileInfo {
                        size,
                        crc32: hasher.finalize(),
                    })
                }
                Err(e) => {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(path, error = %abort, "aborting a multipart upload failed");
                    }
                    Err(e)
                }
            }
        })
    }
}

impl CheckpointStorage for ObjectStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.put_mode(path, bytes, PutMode::Overwrite)
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.put_mode(path, bytes, PutMode::Create)
    }

    fn put_file(&self, path: &str, source: &Path) -> Result<FileInfo> {
        let location = self.location(path)?;
        let mut file = File::open(source)?;
        let len = file.metadata()?.len();
        if len >= self.options.multipart_threshold {
            return self.put_multipart(path, &location, &mut file);
        }
        // Below the multipart threshold: a size that fits memory.
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut bytes)?;
        self.put_mode(path, &bytes, PutMode::Overwrite)?;
        Ok(FileInfo::of(&bytes))
    }

    fn get(&self, path: &str) -> Result<Bytes> {
        let location = self.location(path)?;
        self.runtime
            .block_on(async { self.store.get(&location).await?.bytes().await })
            .map_err(|e| self.error("get", path, e))
    }

    fn get_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        use futures_util::StreamExt;
        let location = self.location(path)?;
        let mut out = std::io::BufWriter::new(File::create(dest)?);
        let mut hasher = crc32fast::Hasher::new();
        let mut size = 0u64;
        self.runtime.block_on(async {
            let mut stream = self
                .store
                .get(&location)
                .await
                .map_err(|e| self.error("get", path, e))?
                .into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error("get", path, e))?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                out.write_all(&chunk)?;
            }
            Ok::<_, Error>(())
        })?;
        out.flush()?;
        Ok(FileInfo {
            size,
            crc32: hasher.finalize(),
        })
    }

    fn size(&self, path: &str) -> Result<Option<u64>> {
        let location = self.location(path)?;
        match self.runtime.block_on(self.store.head(&location)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", path, e)),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        use futures_util::TryStreamExt;
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let metas: Vec<_> = self
            .runtime
            .block_on(self.store.list(prefix).try_collect())
            .map_err(|e| self.error("list", "", e))?;
        let mut paths: Vec<String> = metas
            .iter()
            .filter_map(|m| self.relative(&m.location))
            .filter(|p| check_path(p).is_ok())
            .collect();
        paths.sort();
        Ok(paths)
    }

    fn transfer_concurrency(&self) -> usize {
        self.options.transfers.max(1)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let location = self.location(path)?;
        match self.runtime.block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", path, e)),
        }
    }
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.url)
            .field("store", &self.store.to_string())
            .field("options", &self.options)
            .finish()
    }
}
