//! Where a store keeps its data: a local folder, or a prefix on S3-compatible object storage.
//!
//! On object storage the LanceDB table under the prefix is the shared record; each node keeps
//! what it derives from it (the tantivy indexes) in a local folder of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

use crate::{Error, Result};

/// How to reach an S3-compatible store, beyond the usual `AWS_*` environment variables
/// (credentials, region), which are read as the AWS tools read them.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// A non-AWS endpoint (MinIO, Ceph, moto): `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Allow `http://` endpoints (they are refused otherwise).
    pub allow_http: bool,
}

/// A bucket and prefix on object storage.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// `s3://bucket/prefix`, as given, without a trailing slash.
    pub uri: String,
    pub bucket: String,
    /// The prefix inside the bucket (may be empty).
    pub prefix: String,
    pub s3: S3Options,
}

/// Where a [`crate::Store`] keeps its data.
#[derive(Debug, Clone)]
pub struct Storage {
    /// This node's own folder: the tantivy indexes (and, for a local store, LanceDB too).
    local: PathBuf,
    remote: Option<Remote>,
}

impl Storage {
    /// Everything in one local folder.
    pub fn local(dir: &Path) -> Storage {
        Storage {
            local: dir.to_path_buf(),
            remote: None,
        }
    }

    /// The LanceDB table under `uri` (`s3://bucket/prefix`), this node's derived indexes in
    /// `local`.
    pub fn s3(uri: &str, s3: S3Options, local: &Path) -> Result<Storage> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| {
            Error::Invalid(format!("{uri}: an object-store location starts with s3://"))
        })?;
        let rest = rest.trim_end_matches('/');
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Invalid(format!("{uri}: no bucket name")));
        }
        Ok(Storage {
            local: local.to_path_buf(),
            remote: Some(Remote {
                uri: format!("s3://{rest}"),
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                s3,
            }),
        })
    }

    /// Whether the record lives on object storage.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The folder of this node's own state.
    pub fn local_dir(&self) -> &Path {
        &self.local
    }

    /// What to call the store in messages: the `s3://` URI, or the local folder.
    pub fn describe(&self) -> String {
        match &self.remote {
            Some(r) => r.uri.clone(),
            None => self.local.display().to_string(),
        }
    }

    pub(crate) fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// LanceDB's URI for the store's database, and its storage options.
    pub(crate) fn lance(&self) -> Result<(String, Vec<(String, String)>)> {
        match &self.remote {
            None => {
                let dir = self.local.join("lance");
                let uri = dir.to_str().ok_or_else(|| {
                    Error::Invalid(format!("data dir {} is not valid UTF-8", dir.display()))
                })?;
                Ok((uri.to_owned(), Vec::new()))
            }
            Some(r) => {
                let mut options = Vec::new();
                if let Some(e) = &r.s3.endpoint {
                    options.push(("aws_endpoint".to_owned(), e.clone()));
                }
                if r.s3.allow_http {
                    options.push(("aws_allow_http".to_owned(), "true".to_owned()));
                }
                Ok((format!("{}/lance", r.uri), options))
            }
        }
    }
}

impl Remote {
    /// The bucket, through the same object_store client LanceDB writes with.
    pub fn object_store(&self) -> Result<Arc<dyn ObjectStore>> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_allow_http(self.s3.allow_http);
        if let Some(e) = &self.s3.endpoint {
            b = b.with_endpoint(e);
        }
        let store = b
            .build()
            .map_err(|e| Error::Invalid(format!("{}: {e}", self.uri)))?;
        Ok(Arc::new(store))
    }

    /// `name` under the prefix, in sovrag's own folder beside the table.
    pub fn key(&self, name: &str) -> object_store::path::Path {
        let p = if self.prefix.is_empty() {
            format!("_sovrag/{name}")
        } else {
            format!("{}/_sovrag/{name}", self.prefix)
        };
        object_store::path::Path::from(p)
    }
}

/// A PUT of `body` under `mode` (create-if-absent, update-if-unchanged), returning what a
/// later conditional update needs.
pub(crate) async fn put(
    store: &Arc<dyn ObjectStore>,
    key: &object_store::path::Path,
    body: Vec<u8>,
    mode: object_store::PutMode,
) -> std::result::Result<object_store::UpdateVersion, object_store::Error> {
    let opts = object_store::PutOptions {
        mode,
        ..Default::default()
    };
    let r = store.put_opts(key, body.into(), opts).await?;
    Ok(object_store::UpdateVersion {
        e_tag: r.e_tag,
        version: r.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_uri_names_its_bucket_prefix_and_table() {
        let l = Storage::s3(
            "s3://team-kb/docs/v1/",
            S3Options::default(),
            Path::new("/c"),
        )
        .unwrap();
        let r = l.remote().unwrap();
        assert_eq!(
            (r.bucket.as_str(), r.prefix.as_str()),
            ("team-kb", "docs/v1")
        );
        assert_eq!(l.lance().unwrap().0, "s3://team-kb/docs/v1/lance");
        assert_eq!(r.key("writer.json").as_ref(), "docs/v1/_sovrag/writer.json");
        assert!(Storage::s3("s3:///x", S3Options::default(), Path::new("/c")).is_err());
        assert!(Storage::s3("gs://b/x", S3Options::default(), Path::new("/c")).is_err());
        let local = Storage::local(Path::new("/d"));
        assert!(!local.is_remote());
        assert_eq!(local.lance().unwrap().0, "/d/lance");
    }
}
