//! Flags and their `ETL_*` environment twins, shared by `extractor serve` and
//! `extractor run`. The SFTP password is never shown: not by `Debug`, not in
//! `--help` (env values hidden), not in logs.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use etl_service::ClientAuth;
use etl_sftp::{HostKeyPolicy, SftpAuth, SftpConfig};

use crate::{
    Error,
    run::{DEFAULT_CHUNK_SIZE, DEFAULT_UPLOADS, RunOptions, SourceSpec, default_workers},
    transform::{DEFAULT_DETECT_CHARS, MARKETPLACE_LANGUAGES, Transform, TransformOptions},
    upload::{DEFAULT_DEADLINE, UploadTarget},
};

/// Where chunk files go and who is told about them.
#[derive(Clone, clap::Args)]
pub struct Endpoints {
    /// SFTP server to upload chunk files to (HOST:PORT); files land in input/ of
    /// the user's root.
    #[arg(long, env = "ETL_SFTP_ADDR", default_value = "127.0.0.1:2222")]
    pub sftp_addr: String,

    /// SFTP user name.
    #[arg(long, env = "ETL_SFTP_USER", default_value = "etl")]
    pub sftp_user: String,

    /// SFTP password (default: etl). Never logged.
    #[arg(
        long,
        env = "ETL_SFTP_PASSWORD",
        default_value = "etl",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub sftp_password: String,

    /// Trust only the SFTP server whose host key has this SHA-256 fingerprint
    /// (`SHA256:…`, as `ssh-keygen -lf` and `sftp-gateway host-key` print it).
    /// Without it or --sftp-known-hosts, the first key seen in a run is
    /// trusted for the rest of that run (logged with its fingerprint).
    #[arg(long, env = "ETL_SFTP_HOST_KEY_FINGERPRINT", value_name = "SHA256:…")]
    pub sftp_host_key_fingerprint: Option<String>,

    /// OpenSSH known_hosts file listing the SFTP server's host key; a server
    /// missing from it, or with another key, is refused.
    #[arg(long, env = "ETL_SFTP_KNOWN_HOSTS", value_name = "FILE")]
    pub sftp_known_hosts: Option<PathBuf>,

    /// With --sftp-known-hosts: a server missing from the file is trusted and
    /// added to it (a changed key is still refused).
    #[arg(long, env = "ETL_SFTP_TRUST_ON_FIRST_USE")]
    pub sftp_trust_on_first_use: bool,

    /// gRPC URL of the sink-verifier, which is told each uploaded file's row digests
    /// (RegisterFile) and when a run is complete (CompleteRun). Empty: no registration.
    #[arg(
        long,
        env = "ETL_VERIFIER_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub verifier_url: String,

    /// gRPC URL of the sftp-gateway, which is told about each upload beforehand
    /// (AnnounceUpload) so its FileReady event joins the chunk's trace. Errors are
    /// ignored (a plain SFTP server has no gateway). Empty: no announcements.
    #[arg(
        long,
        env = "ETL_GATEWAY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub gateway_url: String,

    /// How long, in seconds, one chunk file keeps retrying when the SFTP server or
    /// the verifier cannot be reached or the connection breaks (reconnecting, with
    /// backoff and jitter) before the run gives up with an error naming the file
    /// and the server. The first login and CompleteRun wait as long.
    #[arg(
        long,
        env = "ETL_UPLOAD_DEADLINE_SECS",
        default_value_t = DEFAULT_DEADLINE.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub upload_deadline_secs: u64,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            sftp_addr: "127.0.0.1:2222".into(),
            sftp_user: "etl".into(),
            sftp_password: "etl".into(),
            sftp_host_key_fingerprint: None,
            sftp_known_hosts: None,
            sftp_trust_on_first_use: false,
            verifier_url: "http://127.0.0.1:50054".into(),
            gateway_url: "http://127.0.0.1:50052".into(),
            upload_deadline_secs: DEFAULT_DEADLINE.as_secs(),
        }
    }
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("sftp_addr", &self.sftp_addr)
            .field("sftp_user", &self.sftp_user)
            .field("sftp_password", &"***")
            .field("sftp_host_key_fingerprint", &self.sftp_host_key_fingerprint)
            .field("sftp_known_hosts", &self.sftp_known_hosts)
            .field("sftp_trust_on_first_use", &self.sftp_trust_on_first_use)
            .field("verifier_url", &self.verifier_url)
            .field("gateway_url", &self.gateway_url)
            .field("upload_deadline_secs", &self.upload_deadline_secs)
            .finish()
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl Endpoints {
    pub fn sftp_config(&self) -> Result<SftpConfig, Error> {
        Ok(SftpConfig::from_addr(
            &self.sftp_addr,
            &self.sftp_user,
            SftpAuth::Password(self.sftp_password.clone()),
        )?)
    }

    /// Which SFTP host keys to trust, from the three host key flags.
    pub fn host_keys(&self) -> Result<HostKeyPolicy, Error> {
        Ok(HostKeyPolicy::from_settings(
            self.sftp_host_key_fingerprint.as_deref(),
            self.sftp_known_hosts.as_deref(),
            self.sftp_trust_on_first_use,
        )?)
    }

    /// The upload target; `register` = false leaves the verifier out. `auth`:
    /// what the calls to the gateway and the verifier carry (token, CA).
    pub fn upload_target(&self, register: bool, auth: ClientAuth) -> Result<UploadTarget, Error> {
        Ok(UploadTarget {
            sftp: self.sftp_config()?,
            host_keys: self.host_keys()?,
            auth,
            gateway_url: non_empty(&self.gateway_url),
            verifier_url: if register {
                non_empty(&self.verifier_url)
            } else {
                None
            },
            deadline: Duration::from_secs(self.upload_deadline_secs.max(1)),
        })
    }
}

/// How runs transform and cut their input (defaults of `StartRun` in `serve`).
#[derive(Clone, Debug, clap::Args)]
pub struct RunDefaults {
    /// Input records per chunk file; a chunk file holds those of them that are kept.
    #[arg(long, env = "ETL_CHUNK_SIZE", default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: usize,

    /// Transform workers (language detection is the costly part). Default: number of cores.
    #[arg(long, env = "ETL_WORKERS")]
    pub workers: Option<usize>,

    /// Chunk files uploaded at once (over one SFTP connection, pipelined).
    #[arg(long, env = "ETL_UPLOADS", default_value_t = DEFAULT_UPLOADS)]
    pub uploads: usize,

    /// Languages to keep, ISO 639-1 codes, comma-separated (e.g. en,de). Rows in other
    /// languages are dropped and counted per detected language.
    #[arg(
        long,
        env = "ETL_LANGUAGES",
        value_delimiter = ',',
        default_value = "en"
    )]
    pub languages: Vec<String>,

    /// Minimum language detection confidence (0-1) for a row to be kept.
    #[arg(long, env = "ETL_LANGUAGE_THRESHOLD", default_value_t = 0.5)]
    pub language_threshold: f64,

    /// Stem header and body: lowercase, strip non-alphanumerics, split on whitespace,
    /// Snowball English stemmer.
    #[arg(long, env = "ETL_STEM")]
    pub stem: bool,

    /// Detect the language on the first N characters of title + body (0 = all):
    /// faster on long reviews, as accurate (see the transform bench).
    #[arg(long, env = "ETL_DETECT_CHARS", default_value_t = DEFAULT_DETECT_CHARS)]
    pub detect_chars: usize,

    /// Languages the detector chooses among, ISO 639-1 codes, comma-separated, or
    /// "all" (every language it knows: ~25% more CPU). The kept --languages are
    /// always candidates. Default: the languages of Amazon's marketplaces. A review
    /// in another language is counted under the nearest candidate.
    #[arg(
        long,
        env = "ETL_DETECT_AMONG",
        value_delimiter = ',',
        default_value = "en,de,fr,es,it,pt,nl,pl,sv,tr,ja,zh,hi,ar,ru"
    )]
    pub detect_among: Vec<String>,

    /// Stop at the first bad row (wrong column count, invalid UTF-8, empty line,
    /// unknown label) with an error naming file, line and reason, instead of
    /// counting it and going on.
    #[arg(long, env = "ETL_STRICT")]
    pub strict: bool,
}

impl Default for RunDefaults {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            workers: None,
            uploads: DEFAULT_UPLOADS,
            languages: vec!["en".into()],
            language_threshold: 0.5,
            stem: false,
            detect_chars: DEFAULT_DETECT_CHARS,
            detect_among: MARKETPLACE_LANGUAGES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            strict: false,
        }
    }
}

impl RunDefaults {
    pub fn transform(&self) -> TransformOptions {
        TransformOptions {
            languages: self.languages.clone(),
            language_threshold: self.language_threshold,
            stem: self.stem,
            detect_chars: self.detect_chars,
            detect_among: if self.detect_among.iter().any(|l| l.trim() == "all") {
                Vec::new()
            } else {
                self.detect_among.clone()
            },
        }
    }

    /// Run options for `sources` with these settings and no output chosen yet.
    pub fn options(&self, sources: Vec<SourceSpec>) -> RunOptions {
        RunOptions {
            chunk_size: self.chunk_size,
            workers: self.workers.unwrap_or_else(default_workers),
            uploads: self.uploads,
            strict: self.strict,
            transform: self.transform(),
            ..RunOptions::new(sources)
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        Transform::new(&self.transform())?;
        if self.chunk_size == 0 {
            return Err(Error::Config("--chunk-size must be at least 1".into()));
        }
        Ok(())
    }
}

/// The server: `extractor serve`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Config {
    /// Address of the gRPC listener (etl.v1.Extractor, grpc.health.v1, reflection);
    /// port 0 picks a free port, which is logged.
    #[arg(long, env = "ETL_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,

    /// A directory StartRun may read input files from: only files below one of these
    /// (after resolving symlinks) are read; any other path is refused with the same
    /// answer whether it exists or not. Repeatable; the env twin takes a
    /// comma-separated list. Relative paths are taken from the working directory.
    #[arg(
        long = "input-dir",
        value_name = "DIR",
        env = "ETL_INPUT_DIRS",
        value_delimiter = ',',
        default_value = "input"
    )]
    pub input_dirs: Vec<PathBuf>,

    #[command(flatten)]
    pub endpoints: Endpoints,

    #[command(flatten)]
    pub defaults: RunDefaults,

    /// The gRPC API's token and TLS; the token and `--tls-ca` also go with the
    /// calls to the gateway and the verifier.
    #[command(flatten)]
    pub security: etl_service::ApiSecurity,
}

impl Config {
    /// Defaults with the gRPC listener on `127.0.0.1:0`, for tests: StartRun
    /// reads below the system's temporary directory (where tests keep their
    /// inputs).
    pub fn ephemeral(endpoints: Endpoints) -> Self {
        Self {
            grpc_addr: "127.0.0.1:0".into(),
            input_dirs: vec![std::env::temp_dir()],
            endpoints,
            defaults: RunDefaults::default(),
            security: etl_service::ApiSecurity::default(),
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.defaults.validate()?;
        self.endpoints.sftp_config()?;
        if self.input_dirs.iter().all(|d| d.as_os_str().is_empty()) {
            return Err(Error::Config(
                "--input-dir (ETL_INPUT_DIRS) names no directory: StartRun could read nothing"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The directories StartRun may read below, and the check of a requested
/// path against them.
#[derive(Clone, Debug)]
pub struct InputDirs {
    /// Absolute, as configured (they may not exist yet).
    dirs: Vec<PathBuf>,
}

/// What StartRun answers for any path outside the input directories, the
/// same whether or not it exists (so the answer tells nothing about the host).
pub const NOT_ALLOWED: &str = "is not allowed: StartRun reads only files below the extractor's input directories (--input-dir, ETL_INPUT_DIRS)";

impl InputDirs {
    /// `dirs` made absolute against the working directory.
    pub fn new(dirs: &[PathBuf]) -> Result<Self, Error> {
        let dirs = dirs
            .iter()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| {
                std::path::absolute(d)
                    .map_err(|e| Error::Config(format!("input directory {}: {e}", d.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { dirs })
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The file `requested` names, resolved (symlinks followed), when it is
    /// below an input directory; `None` otherwise, and for a path that does
    /// not resolve (missing) unless it lies lexically below one (then the
    /// run reports it missing, which tells nothing outside). A `..` component
    /// is never allowed.
    pub fn resolve(&self, requested: &str) -> Option<PathBuf> {
        let path = Path::new(requested);
        if requested.is_empty()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return None;
        }
        let absolute = std::path::absolute(path).ok()?;
        let roots: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter_map(|d| d.canonicalize().ok())
            .collect();
        match absolute.canonicalize() {
            Ok(real) => roots
                .iter()
                .any(|r| real.starts_with(r) && real != *r)
                .then_some(real),
            Err(_) => {
                let below = |d: &PathBuf| absolute.starts_with(d) && absolute != *d;
                (self.dirs.iter().any(below) || roots.iter().any(below)).then_some(absolute)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let e = Endpoints {
            sftp_password: "hunter2".into(),
            ..Default::default()
        };
        let shown = format!("{:?}", Config::ephemeral(e));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn empty_urls_switch_features_off() {
        let e = Endpoints {
            gateway_url: String::new(),
            ..Default::default()
        };
        let t = e.upload_target(true, ClientAuth::none()).expect("valid");
        assert_eq!(t.gateway_url, None);
        assert_eq!(t.verifier_url.as_deref(), Some("http://127.0.0.1:50054"));
        assert_eq!(
            e.upload_target(false, ClientAuth::none())
                .expect("valid")
                .verifier_url,
            None
        );
    }

    #[test]
    fn start_run_reads_only_below_the_input_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let inside = tmp.path().join("in");
        let outside = tmp.path().join("out");
        std::fs::create_dir_all(inside.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(inside.join("sub/a.csv"), "1,t,b\n").expect("write");
        std::fs::write(outside.join("b.csv"), "1,t,b\n").expect("write");
        std::os::unix::fs::symlink(outside.join("b.csv"), inside.join("link.csv"))
            .expect("symlink");
        let dirs = InputDirs::new(std::slice::from_ref(&inside)).expect("dirs");
        let s = |p: &std::path::Path| p.display().to_string();
        let real = inside.canonicalize().expect("real");
        assert_eq!(
            dirs.resolve(&s(&inside.join("sub/a.csv"))),
            Some(real.join("sub/a.csv"))
        );
        // Missing below an input dir: the run will say so.
        assert!(dirs.resolve(&s(&inside.join("missing.csv"))).is_some());
        // Outside, existing or not, through `..` or a symlink: refused alike.
        for p in [
            outside.join("b.csv"),
            outside.join("missing.csv"),
            inside.join("../out/b.csv"),
            inside.join("link.csv"),
            inside.clone(),
            std::path::PathBuf::from("/etc/passwd"),
        ] {
            assert_eq!(dirs.resolve(&s(&p)), None, "{}", p.display());
        }
        assert_eq!(dirs.resolve(""), None);
    }

    #[test]
    fn detect_among_all_means_every_language() {
        let d = RunDefaults {
            detect_among: vec!["all".into()],
            ..Default::default()
        };
        assert!(d.transform().detect_among.is_empty());
        assert_eq!(
            RunDefaults::default().transform().detect_among.len(),
            MARKETPLACE_LANGUAGES.len()
        );
    }
}
