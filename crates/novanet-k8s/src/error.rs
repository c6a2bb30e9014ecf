//! Errors of this crate: one enum for apiserver-facing operations ([`Error`]), one for manifest
//! parsing ([`ManifestError`]) and one for the pure CIDR-pool logic ([`CidrPoolError`]).
//!
//! Variants are structured (no `Error(String)` catch-all) so callers can turn them into metric labels.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::kinds::ObjectKind;

/// Errors of the apiserver-facing helpers and the sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the apiserver failed.
    #[error("apiserver request failed ({context}): {source}")]
    Kube {
        /// What was being done, e.g. "patch node n1".
        context: String,
        /// The kube-rs error.
        #[source]
        source: kube::Error,
    },
    /// A kubeconfig could not be read or interpreted.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file that was read.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A kube client could not be built from a valid kubeconfig.
    #[error("building a client from kubeconfig {path}: {source}")]
    Client {
        /// The kubeconfig file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: kube::Error,
    },
    /// Waiting for something took longer than allowed.
    #[error("timed out after {after:?} waiting for {what}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Timeout {
        /// What was awaited.
        what: String,
        /// The time allowed.
        after: Duration,
        /// The last error seen while waiting, if any.
        last_error: Option<String>,
    },
    /// The writer feeding a store went away before the store's first full list.
    #[error("the source feeding the {kind} store stopped before it synced")]
    SourceStopped {
        /// The store's kind.
        kind: ObjectKind,
    },
    /// A Node does not exist.
    #[error("node {name} not found")]
    NodeNotFound {
        /// The node's name.
        name: String,
    },
    /// The pure pool logic refused (bad pool, exhausted pool).
    #[error(transparent)]
    CidrPool(#[from] CidrPoolError),
    /// Another writer won the optimistic-concurrency race too many times in a row.
    #[error("pod CIDR allocation for node {node} lost {attempts} update races in a row")]
    AllocationConflict {
        /// The node being allocated for.
        node: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A manifest could not be read or parsed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Errors while reading a multi-document manifest. `document` is 1-based and counts every
/// `---`-separated document of the input, empty ones included, so it matches what an editor shows.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("reading manifest {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("document {document}: invalid YAML: {source}")]
    Yaml {
        /// 1-based document index.
        document: usize,
        /// The YAML error (carries line/column).
        #[source]
        source: serde_yaml::Error,
    },
    /// A document is not a mapping with a string `kind` and `apiVersion`.
    #[error(
        "document {document}: not a Kubernetes object (needs string fields `apiVersion` and `kind`)"
    )]
    NotAnObject {
        /// 1-based document index.
        document: usize,
    },
    /// A kind this crate does not model.
    #[error(
        "document {document}: unsupported kind {api_version}/{kind} (supported: v1 Node, Namespace, Pod, Service, List; networking.k8s.io/v1 NetworkPolicy; discovery.k8s.io/v1 EndpointSlice)"
    )]
    UnknownKind {
        /// 1-based document index.
        document: usize,
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
    /// The object does not fit the typed schema of its kind.
    #[error("document {document}: invalid {kind}: {source}")]
    InvalidObject {
        /// 1-based document index.
        document: usize,
        /// The kind.
        kind: &'static str,
        /// What did not fit.
        #[source]
        source: serde_yaml::Error,
    },
    /// An object lacks `metadata.name`.
    #[error("document {document}: {kind} without metadata.name")]
    MissingName {
        /// 1-based document index.
        document: usize,
        /// The kind.
        kind: &'static str,
    },
    /// The same object appears twice.
    #[error("document {document}: duplicate {kind} {key}")]
    Duplicate {
        /// 1-based document index of the second occurrence.
        document: usize,
        /// The kind.
        kind: &'static str,
        /// namespace/name or name.
        key: String,
    },
}

/// Errors of the pure pod-CIDR pool logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrPoolError {
    /// The per-node mask does not fit in the cluster CIDR.
    #[error("per-node mask /{mask} does not fit cluster CIDR {cluster} (needs {min}..={max})")]
    InvalidMask {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The requested per-node prefix length.
        mask: u8,
        /// The smallest allowed prefix length (the cluster's).
        min: u8,
        /// The largest allowed prefix length (32 or 128).
        max: u8,
    },
    /// Every /mask of the cluster CIDR overlaps something in use.
    #[error("no free /{mask} left in {cluster}")]
    Exhausted {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The per-node prefix length.
        mask: u8,
    },
}
