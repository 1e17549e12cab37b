//! Apicurio Registry 3 (the Quarkus distribution, in-memory H2 storage) on a
//! loopback port it picks, with its Confluent-compatible API at
//! `/apis/ccompat/v7`. Optional HTTP basic auth (Quarkus embedded users) and
//! TLS (a CA and server certificate made with the `openssl` CLI), both set
//! with runtime properties. Killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The Apicurio release `scripts/install-deps` unpacks: its
/// `APICURIO_VERSION=` line is the one place the version is set.
pub fn apicurio_version() -> &'static str {
    const SCRIPT: &str = include_str!("../../../scripts/install-deps");
    SCRIPT
        .lines()
        .find_map(|l| l.strip_prefix("APICURIO_VERSION="))
        .map(str::trim)
        .expect("scripts/install-deps sets APICURIO_VERSION=")
}
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// How to start the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth with this user and password on every path.
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS only, with a certificate signed by a CA made for this instance.
    pub tls: bool,
    /// `apicurio.ccompat.legacy-id-mode.enabled`: ids are global ids (one per
    /// subject version) instead of content ids (one per schema text).
    pub legacy_ids: bool,
}

/// A running Apicurio Registry.
pub struct SchemaRegistry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    options: RegistryOptions,
    started_in: Duration,
}

impl SchemaRegistry {
    pub async fn start() -> SchemaRegistry {
        Self::start_with(RegistryOptions::default()).await
    }

    /// Starts Apicurio on a port it picks (`quarkus.http.port=0`, or
    /// `ssl-port` with TLS) and waits until `/apis/ccompat/v7/subjects`
    /// answers. (A client that must be pointed at the registry before it
    /// starts can point at a [`crate::ReservedPort`].)
    pub async fn start_with(options: RegistryOptions) -> SchemaRegistry {
        let jar = apicurio_jar();
        let dir = tempfile::tempdir().unwrap();
        if options.tls {
            make_certificates(dir.path());
        }
        let log = dir.path().join("apicurio.log");
        let t0 = Instant::now();
        let child = Command::new(java())
            .current_dir(dir.path())
            .args(jvm_flags())
            .args(properties(&options, dir.path()))
            .arg("-jar")
            .arg(&jar)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("apicurio.err")).unwrap())
            .spawn()
            .expect("start java for Apicurio Registry");
        let mut registry = SchemaRegistry {
            child: Some(child),
            port: 0,
            dir,
            options,
            started_in: Duration::ZERO,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        registry.port = registry.wait_until_listening(deadline).await;
        registry.wait_until_answering(deadline).await;
        registry.started_in = t0.elapsed();
        registry
    }

    /// The Confluent-compatible base URL, as the relay's
    /// `encoding.schema_registry.url`.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/apis/ccompat/v7", self.port)
    }

    /// Where the registry listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The CA that signed the server certificate (TLS only).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// From process start to the first answer of the ccompat API.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Registers `schema` (Avro text) under `subject` and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> u32 {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                json!({ "schema": schema, "schemaType": "AVRO" }),
            )
            .await;
        assert_eq!(status, 200, "register under {subject}: {body}");
        body["id"].as_u64().expect("id") as u32
    }

    /// Sets a subject's compatibility level (`BACKWARD`, `NONE`, ...).
    pub async fn set_compatibility(&self, subject: &str, level: &str) {
        let resp = self
            .client()
            .put(format!("{}/config/{subject}", self.url()))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&json!({ "compatibility": level }))
            .send()
            .await
            .expect("PUT config");
        assert!(
            resp.status().is_success(),
            "set compatibility of {subject}: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// The versions registered under `subject` (empty when it does not exist).
    pub async fn versions(&self, subject: &str) -> Vec<u64> {
        let resp = self
            .client()
            .get(format!("{}/subjects/{subject}/versions", self.url()))
            .send()
            .await
            .expect("GET versions");
        if resp.status() == 404 {
            return Vec::new();
        }
        let body: Value = resp.json().await.expect("versions JSON");
        body.as_array()
            .expect("versions array")
            .iter()
            .filter_map(Value::as_u64)
            .collect()
    }

    /// The latest version of `subject`: (id, schema text).
    pub async fn latest(&self, subject: &str) -> (u32, String) {
        let resp = self
            .client()
            .get(format!("{}/subjects/{subject}/versions/latest", self.url()))
            .send()
            .await
            .expect("GET latest");
        let body: Value = resp.json().await.expect("latest JSON");
        (
            body["id"].as_u64().expect("id") as u32,
            body["schema"].as_str().expect("schema").to_string(),
        )
    }

    /// The Apicurio log (stdout then stderr), for failure messages.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("apicurio.log"), read("apicurio.err"))
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client()
            .post(format!("{}{path}", self.url()))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&body)
            .send()
            .await
            .expect("POST to the registry");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A client that trusts the instance's CA and sends its credentials.
    fn client(&self) -> AuthClient {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = self.ca_file() {
            let pem = std::fs::read(ca).unwrap();
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        AuthClient {
            http: builder.build().unwrap(),
            auth: self.options.basic_auth.clone(),
        }
    }

    /// The port in this process's "Listening on: http(s)://127.0.0.1:PORT"
    /// line, which Quarkus logs once it has bound the port and started.
    async fn wait_until_listening(&mut self, deadline: Instant) -> u16 {
        loop {
            let log = self.log();
            let port = log
                .lines()
                .find_map(|l| l.split_once("Listening on: ")?.1.rsplit_once(':'))
                .and_then(|(_, port)| port.trim().parse().ok());
            if let Some(port) = port {
                return port;
            }
            self.fail_if_exited_or_late(deadline, "log the port it listens on");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_until_answering(&mut self, deadline: Instant) {
        let client = self.client();
        let url = format!("{}/subjects", self.url());
        loop {
            // Any HTTP answer (a 401 too) means the API is up.
            if client.get(url.clone()).send().await.is_ok() {
                return;
            }
            self.fail_if_exited_or_late(deadline, &format!("answer {url}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails the test when the registry has exited or `deadline` passed
    /// before it did `what`.
    fn fail_if_exited_or_late(&mut self, deadline: Instant, what: &str) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "Apicurio Registry exited with {status} before it could {what}; log:\n{}",
                self.log()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "Apicurio Registry did not {what} within 120 s; log:\n{}",
                self.log()
            );
        }
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A reqwest client that adds basic auth to every request.
struct AuthClient {
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl AuthClient {
    fn with_auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }
    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.with_auth(self.http.get(url))
    }
    fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.with_auth(self.http.post(url))
    }
    fn put(&self, url: String) -> reqwest::RequestBuilder {
        self.with_auth(self.http.put(url))
    }
}

/// The unpacked Apicurio runner jar in the tools cache.
fn apicurio_jar() -> PathBuf {
    let version = apicurio_version();
    let jar = crate::tools_dir().join(format!(
        "apicurio-registry-{version}/apicurio-registry-app-{version}-runner.jar"
    ));
    assert!(
        jar.is_file(),
        "Apicurio Registry {version} not found at {}: run scripts/install-deps",
        jar.display()
    );
    jar
}

fn java() -> PathBuf {
    if let Ok(home) = std::env::var("JAVA_HOME") {
        let java = PathBuf::from(home).join("bin/java");
        if java.is_file() {
            return java;
        }
    }
    let on_path = std::env::var("PATH").ok().and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("java"))
            .find(|j| j.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!("java (17 or newer) not found for Apicurio Registry: run scripts/install-deps")
    })
}

/// A small heap and the C1 compiler only: the registry serves a handful of
/// requests, and starting fast matters more than peak throughput.
fn jvm_flags() -> Vec<String> {
    [
        "-Xmx384m",
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-XX:CICompilerCount=2",
        "-Djava.net.preferIPv4Stack=true",
    ]
    .map(String::from)
    .to_vec()
}

/// Runtime properties. Port 0 lets the registry pick its port; the
/// `io.quarkus` log category at INFO makes Quarkus log which one it took.
fn properties(options: &RegistryOptions, dir: &Path) -> Vec<String> {
    let mut props: Vec<(String, String)> = vec![
        ("quarkus.http.host".into(), "127.0.0.1".into()),
        (
            "quarkus.log.category.\"io.quarkus\".level".into(),
            "INFO".into(),
        ),
        // In-memory H2 (the default storage) with a small connection pool.
        ("apicurio.datasource.jdbc.initial-size".into(), "2".into()),
        ("apicurio.datasource.jdbc.min-size".into(), "2".into()),
        ("apicurio.datasource.jdbc.max-size".into(), "10".into()),
        ("quarkus.http.access-log.enabled".into(), "false".into()),
    ];
    if options.tls {
        props.extend([
            ("quarkus.http.ssl-port".into(), "0".into()),
            // The plain listener is disabled; its port only has to be free.
            ("quarkus.http.port".into(), "0".into()),
            ("quarkus.http.insecure-requests".into(), "disabled".into()),
            (
                "quarkus.http.ssl.certificate.files".into(),
                dir.join("server.pem").display().to_string(),
            ),
            (
                "quarkus.http.ssl.certificate.key-files".into(),
                dir.join("server.key").display().to_string(),
            ),
        ]);
    } else {
        props.push(("quarkus.http.port".into(), "0".into()));
    }
    if let Some((user, password)) = &options.basic_auth {
        props.extend([
            ("quarkus.http.auth.basic".into(), "true".into()),
            (
                "quarkus.security.users.embedded.enabled".into(),
                "true".into(),
            ),
            (
                "quarkus.security.users.embedded.plain-text".into(),
                "true".into(),
            ),
            (
                format!("quarkus.security.users.embedded.users.{user}"),
                password.clone(),
            ),
            (
                format!("quarkus.security.users.embedded.roles.{user}"),
                "sr-admin".into(),
            ),
            (
                "quarkus.http.auth.permission.everything.paths".into(),
                "/*".into(),
            ),
            (
                "quarkus.http.auth.permission.everything.policy".into(),
                "authenticated".into(),
            ),
        ]);
    }
    if options.legacy_ids {
        props.push((
            "apicurio.ccompat.legacy-id-mode.enabled".into(),
            "true".into(),
        ));
    }
    props
        .into_iter()
        .map(|(k, v)| format!("-D{k}={v}"))
        .collect()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &key,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=studio-relay test registry CA"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &key,
            &["-keyout", "server.key", "-out", "server.csr"],
            &["-subj", "/CN=127.0.0.1"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}
