//! The demo's target: a tiny shop API on 127.0.0.1 that counts what it answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

pub struct DemoService {
    pub addr: SocketAddr,
    answered: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl DemoService {
    pub async fn start() -> std::io::Result<DemoService> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let answered = Arc::new(AtomicU64::new(0));
        let counter = answered.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let counter = counter.clone();
                        async move {
                            let response = handle(request).await;
                            counter.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(DemoService { addr, answered, server })
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for DemoService {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().expect("valid header"));
    response
}

async fn handle(request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let query = request.uri().query().unwrap_or("").to_string();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    match (method, path.as_str()) {
        (Method::GET, "/products") => {
            json(StatusCode::OK, r#"[{"id":1,"name":"kettle"},{"id":2,"name":"teapot"},{"id":3,"name":"mug"}]"#.into())
        }
        (Method::GET, p) if p.starts_with("/products/") => {
            let id = &p["/products/".len()..];
            json(StatusCode::OK, format!(r#"{{"id":{id:?},"price":12.5,"stock":7}}"#))
        }
        (Method::GET, "/search") => json(StatusCode::OK, format!(r#"{{"query":{query:?},"hits":2}}"#)),
        (Method::POST, "/cart") => json(StatusCode::CREATED, format!(r#"{{"added_bytes":{}}}"#, body.len())),
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"no such page"}"#.into()),
    }
}
