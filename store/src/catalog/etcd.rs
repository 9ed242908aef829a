//! The etcd-backed catalog (`etcd://host:port[,host:port][/prefix]`), the production path.
//! Keys live under `<prefix>/`; values are the JSON documents of [`crate::schema`].

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    Txn, TxnOp, WatchOptions,
};
use futures::stream::BoxStream;

use super::{CatalogBackend, CatalogError, KeyValue, LeaseId, WatchEvent};

pub struct EtcdCatalog {
    client: Client,
    /// `<prefix>/`, prepended to every key.
    root: String,
}

impl EtcdCatalog {
    pub async fn connect(endpoints: &[String], prefix: &str, tls: Option<TlsOptions>) -> Result<Self, CatalogError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(EtcdCatalog { client, root: format!("{}/", prefix.trim_matches('/')) })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        to_kv(&self.root, kv)
    }
}

/// TLS to etcd from a catalog URL's parameters: `tls_ca` turns it on; `tls_cert` and
/// `tls_key` are a client certificate. Any other parameter is a mistake worth saying.
pub(super) fn tls_options(params: &BTreeMap<String, String>) -> Result<Option<TlsOptions>, String> {
    if let Some(unknown) = params.keys().find(|k| !["tls_ca", "tls_cert", "tls_key"].contains(&k.as_str())) {
        return Err(format!("unknown parameter {unknown:?} (an etcd URL takes tls_ca, tls_cert and tls_key)"));
    }
    let read = |name: &str| {
        params
            .get(name)
            .map(|path| std::fs::read(path).map_err(|e| format!("cannot read {name} {path}: {e}")))
            .transpose()
    };
    let (ca, cert, key) = (read("tls_ca")?, read("tls_cert")?, read("tls_key")?);
    let Some(ca) = ca else {
        return match cert.is_some() || key.is_some() {
            true => Err("tls_cert and tls_key need tls_ca, the CA that signed etcd's certificate".into()),
            false => Ok(None),
        };
    };
    let tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(tls.identity(Identity::from_pem(cert, key)))),
        (None, None) => Ok(Some(tls)),
        _ => Err("tls_cert and tls_key go together".into()),
    }
}

/// An etcd client error in plain words, with a hint when it looks like a TLS mismatch.
pub(super) fn describe(error: &etcd_client::Error) -> String {
    let causes = match error {
        etcd_client::Error::GRpcStatus(status) => reprise_proto::error_causes(status),
        etcd_client::Error::TransportError(e) => reprise_proto::error_causes(e),
        other => other.to_string(),
    };
    let hint = if reprise_proto::reads_as_hang_up(&causes) || reprise_proto::reads_as_certificate_refused(&causes) {
        " (if etcd serves TLS or wants a client certificate, name them in the catalog URL: \
         ?tls_ca=PATH&tls_cert=PATH&tls_key=PATH)"
    } else if causes.contains("InvalidContentType") || causes.contains("tls handshake eof") {
        " (etcd does not serve TLS here: drop tls_ca from the catalog URL)"
    } else {
        ""
    };
    format!("{causes}{hint}")
}

/// Converts an etcd entry, making its key relative to `root`.
fn to_kv(root: &str, kv: &etcd_client::KeyValue) -> KeyValue {
    let key = String::from_utf8_lossy(kv.key());
    KeyValue {
        key: key.strip_prefix(root).unwrap_or(&key).to_string(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    }
}

fn put_options(lease: Option<LeaseId>) -> Option<PutOptions> {
    lease.map(|id| PutOptions::new().with_lease(id))
}

#[async_trait]
impl CatalogBackend for EtcdCatalog {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, CatalogError> {
        let response = self.client.clone().get(self.full(key), None).await?;
        Ok(response.kvs().first().map(|kv| self.to_kv(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, CatalogError> {
        let response = self.client.clone().get(self.full(prefix), Some(GetOptions::new().with_prefix())).await?;
        Ok(response.kvs().iter().map(|kv| self.to_kv(kv)).collect())
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64, CatalogError> {
        let response = self.client.clone().put(self.full(key), value, put_options(lease)).await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        lease: Option<LeaseId>,
    ) -> Result<Option<i64>, CatalogError> {
        let key = self.full(key);
        // A missing key has mod revision 0 in etcd's comparisons.
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value, put_options(lease))]);
        let response = self.client.clone().txn(txn).await?;
        Ok(response.succeeded().then(|| response.header().map_or(0, |h| h.revision())))
    }

    async fn delete(&self, key: &str) -> Result<bool, CatalogError> {
        let response = self.client.clone().delete(self.full(key), None).await?;
        Ok(response.deleted() > 0)
    }

    async fn delete_if(&self, key: &str, expected: i64) -> Result<bool, CatalogError> {
        let key = self.full(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(key, None)]);
        Ok(self.client.clone().txn(txn).await?.succeeded())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, CatalogError> {
        let ttl = ttl.as_secs().max(1) as i64;
        Ok(self.client.clone().lease_grant(ttl, None).await?.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, CatalogError> {
        let renewed = async {
            let (mut keeper, mut responses) = self.client.clone().lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(responses.message().await?.is_some_and(|r| r.ttl() > 0))
        };
        match renewed.await {
            // The catalog's own answer that the lease is gone, unlike a failed call.
            Err(etcd_client::Error::LeaseKeepAliveError(message)) if message.contains("lease not found") => Ok(false),
            other => Ok(other?),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), CatalogError> {
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            // Already expired: its keys are gone, which is what revoking wants.
            Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("lease not found") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn watch(&self, prefix: &str) -> Result<BoxStream<'static, Result<WatchEvent, CatalogError>>, CatalogError> {
        let full = self.full(prefix);
        let mut stream = self.client.clone().watch(full.clone(), Some(WatchOptions::new().with_prefix())).await?;
        let root = self.root.clone();
        Ok(Box::pin(async_stream(move |tx| async move {
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            let _ = tx.send(Err(CatalogError::WatchEnded(full.clone()))).await;
                            return;
                        }
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            let item = match event.event_type() {
                                EventType::Put => WatchEvent::Put(to_kv(&root, kv)),
                                EventType::Delete => WatchEvent::Delete(to_kv(&root, kv).key),
                            };
                            if tx.send(Ok(item)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Err(CatalogError::WatchEnded(full.clone()))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        })))
    }
}

/// A stream fed by a spawned task through a small bounded channel; the task ends when
/// the stream is dropped (its next send fails).
fn async_stream<T, F, Fut>(produce: F) -> tokio_stream::wrappers::ReceiverStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
