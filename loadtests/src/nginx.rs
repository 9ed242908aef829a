//! A real nginx (Debian's) on a free loopback port, one process (`master_process off`),
//! answering `200 ok` to everything: the external target of the tests that read its access
//! logs and of the benchmarks, where the project's own sink would be a target that
//! competes with the sender for the CPU in ways a production target does not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use reprise_proto::v1::HttpProtocol;

/// What nginx writes per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogs {
    /// Nothing: a benchmark target.
    Off,
    /// Every request in the combined format (`combined.log`), the common format
    /// (`common.log`) and JSON lines (`json.log`).
    AllFormats,
}

pub struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    /// Starts nginx with its files under `dir` and waits until it accepts connections:
    /// HTTP/1.x, or h2c by prior knowledge only.
    pub fn start(dir: &Path, logs: AccessLogs, protocol: HttpProtocol) -> anyhow::Result<Nginx> {
        // nginx reads relative paths from its prefix (`-p`), not from here.
        let dir = &std::path::absolute(dir)?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        // nginx cannot be told to pick a port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let d = dir.display();
        let access_logs = match logs {
            AccessLogs::Off => "access_log off;".to_string(),
            AccessLogs::AllFormats => format!(
                r#"log_format common_format '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent';
    log_format json_lines escape=json '{{"msec":"$msec","method":"$request_method","url":"$request_uri","host":"$host","user_agent":"$http_user_agent","referer":"$http_referer"}}';
    access_log {d}/combined.log combined;
    access_log {d}/common.log common_format;
    access_log {d}/json.log json_lines;"#
            ),
        };
        let http2 = if protocol == HttpProtocol::Http2 { " http2" } else { "" };
        // Connections stay open for good (the default closes one every 1000 requests,
        // which would measure reconnects), and as many as a benchmark's in-flight bound.
        let config = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 8192; }}
http {{
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 100000000;
    {access_logs}
    server {{
        listen 127.0.0.1:{port} backlog=4096{http2};
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), config)?;
        let mut nginx = Command::new("nginx");
        nginx.args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf"), "-e", &format!("{d}/error.log")]);
        let child = crate::procs::start_server(&mut nginx, port, &dir.join("error.log"))?;
        Ok(Nginx { child, dir: dir.to_path_buf(), port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// CPU seconds nginx used so far.
    pub fn cpu_seconds(&self) -> f64 {
        crate::procstat::cpu_seconds(&self.child.id().to_string()).unwrap_or(0.0)
    }

    /// Stops nginx; returns the directory of its logs.
    pub fn stop(mut self) -> PathBuf {
        self.kill();
        self.dir.clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}
