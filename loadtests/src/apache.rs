//! A real Apache httpd (Debian's `apache2-bin`) on a free loopback port, in one process
//! (`-X`), serving static files with `Protocols h2c http/1.1`: the server that takes
//! an `Upgrade: h2c` (nginx speaks h2c by prior knowledge only), for the HTTP/2 capture
//! tests.

use std::path::Path;
use std::process::{Child, Command};

use anyhow::Context;

pub struct Apache {
    child: Child,
    port: u16,
}

impl Apache {
    /// Starts Apache with its configuration and logs under `dir`, serving each of `files`
    /// (path under the document root, content), and waits until it accepts connections.
    pub fn start(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<Apache> {
        let dir = &std::path::absolute(dir)?;
        let docs = dir.join("docs");
        for (path, content) in files {
            let file = docs.join(path);
            std::fs::create_dir_all(file.parent().context("a file under the document root")?)?;
            std::fs::write(file, content)?;
        }
        // Apache cannot be told to pick a port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let (d, modules) = (dir.display(), "/usr/lib/apache2/modules");
        let config = format!(
            r#"ServerRoot {d}
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule http2_module {modules}/mod_http2.so
Protocols h2c http/1.1
DocumentRoot {d}/docs
<Directory {d}/docs>
    Require all granted
</Directory>
"#
        );
        std::fs::write(dir.join("httpd.conf"), config)?;
        let mut apache = Command::new("apache2");
        apache.args(["-X", "-f", &format!("{d}/httpd.conf")]);
        let child = crate::procs::start_server(&mut apache, port, &dir.join("error.log"))?;
        Ok(Apache { child, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
