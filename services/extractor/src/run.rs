//! One extraction run, from input files to registered chunk files:
//!
//! ```text
//! reader thread ──batches──► transform workers ──chunks──► uploads (concurrent)
//! (source + labels,          (language, stem,             (local file and/or
//!  bad rows, strict)          TSV + digests)               SFTP + register)
//! ```
//!
//! The reader numbers batches in reading order, so chunk numbers do not depend
//! on which worker finishes first. Every stage is bounded (a channel of a few
//! batches, `workers` transforms, `uploads` uploads in flight), so memory stays
//! bounded for inputs larger than memory.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
};

use etl_core::{
    naming::{chunk_file_name, input_stem, temp_name},
    review::LabelScheme,
};
use etl_service::Shutdown;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, Span};
use xxhash_rust::xxh3::Xxh3;

use crate::{
    Error,
    chunk::{self, ChunkFile},
    progress::{Progress, Summary},
    source::{BadRow, Item},
    transform::{self, Labeled, Outcome, Transform, TransformOptions},
    upload::{UploadTarget, Uploader},
};

/// Source name used by `--input PATH`.
pub const DEFAULT_SOURCE_NAME: &str = "amazon";
pub const DEFAULT_CHUNK_SIZE: usize = 1000;
pub const DEFAULT_UPLOADS: usize = 4;

/// One input of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    /// Written to the `source` column.
    pub name: String,
    pub path: PathBuf,
    pub labels: LabelScheme,
}

impl SourceSpec {
    /// Parses `NAME=PATH` or `NAME=PATH:polarity|stars` (scheme default: `labels`).
    pub fn parse(s: &str, labels: LabelScheme) -> Result<Self, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=PATH or NAME=PATH:stars"))?;
        let (path, labels) = match rest.rsplit_once(':') {
            Some((path, scheme @ ("polarity" | "stars"))) => {
                (path, scheme.parse().map_err(|e: String| e)?)
            }
            _ => (rest, labels),
        };
        let spec = Self {
            name: name.trim().to_string(),
            path: PathBuf::from(path),
            labels,
        };
        spec.check().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), Error> {
        if self.name.is_empty() {
            return Err(Error::Config(format!(
                "source {}: empty name (NAME=PATH)",
                self.path.display()
            )));
        }
        if self.path.as_os_str().is_empty() {
            return Err(Error::Config(format!("source {}: empty path", self.name)));
        }
        Ok(())
    }
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub sources: Vec<SourceSpec>,
    /// Default: derived from the inputs and options, see [`derive_run_id`].
    pub run_id: Option<String>,
    /// Input records per chunk file (a chunk holds those of them that are kept).
    pub chunk_size: usize,
    /// Transform workers.
    pub workers: usize,
    /// Chunk files uploaded at once.
    pub uploads: usize,
    /// Stop at the first bad row instead of counting it.
    pub strict: bool,
    pub transform: TransformOptions,
    /// Write chunk files to this directory.
    pub output_dir: Option<PathBuf>,
    /// Upload chunk files (and register them).
    pub upload: Option<UploadTarget>,
}

impl RunOptions {
    /// Defaults for `sources`: no output chosen yet.
    pub fn new(sources: Vec<SourceSpec>) -> Self {
        Self {
            sources,
            run_id: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            workers: default_workers(),
            uploads: DEFAULT_UPLOADS,
            strict: false,
            transform: TransformOptions::default(),
            output_dir: None,
            upload: None,
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.sources.is_empty() {
            return Err(Error::Config(
                "no input: give --input PATH or --source NAME=PATH".into(),
            ));
        }
        let mut stems = BTreeMap::new();
        for s in &self.sources {
            s.check()?;
            let stem = input_stem(&s.path.to_string_lossy());
            if let Some(other) = stems.insert(stem.clone(), s.name.clone()) {
                return Err(Error::Config(format!(
                    "sources {other:?} and {:?} both have input stem {stem:?}, so their chunk files would have the same names: rename one of the files",
                    s.name
                )));
            }
        }
        if self.chunk_size == 0 {
            return Err(Error::Config("--chunk-size must be at least 1".into()));
        }
        if self.output_dir.is_none() && self.upload.is_none() {
            return Err(Error::Config(
                "nowhere to put chunk files: give --output-dir DIR and/or --upload".into(),
            ));
        }
        Ok(())
    }
}

/// Number of cores, the default of `--workers`.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Run ids become part of file names: keep them to `[A-Za-z0-9._-]`, without
/// the `__` separator of chunk names.
pub fn check_run_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && !id.contains("__")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "run id {id:?} must be 1-64 characters of A-Z a-z 0-9 . _ - without \"__\" and not start with '.'"
        )))
    }
}

/// `run-<12 hex>` from each input's content (a digest of every byte, so a
/// file generated again with the same rows, touched, or copied elsewhere keeps
/// its id), its stem and source name, and the options that change the output:
/// the same input and options give the same id, hence the same chunk file
/// names, so running again resumes the run instead of loading a second copy.
/// Reads every input once (xxh3, at disk or page-cache speed): call it off the
/// async runtime.
pub fn derive_run_id(opts: &RunOptions) -> Result<String, Error> {
    let mut h = Xxh3::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(b"extractor-run-v2");
    for s in &opts.sources {
        field(s.name.as_bytes());
        field(input_stem(&s.path.to_string_lossy()).as_bytes());
        field(&content_digest(&s.path)?.to_le_bytes());
        field(s.labels.to_string().as_bytes());
    }
    field(&(opts.chunk_size as u64).to_le_bytes());
    let mut langs: Vec<String> = opts
        .transform
        .languages
        .iter()
        .map(|l| l.trim().to_ascii_lowercase())
        .collect();
    langs.sort();
    field(langs.join(",").as_bytes());
    field(&opts.transform.language_threshold.to_bits().to_le_bytes());
    field(&[u8::from(opts.transform.stem)]);
    field(&(opts.transform.detect_chars as u64).to_le_bytes());
    let mut among: Vec<String> = opts
        .transform
        .detect_among
        .iter()
        .map(|l| l.trim().to_ascii_lowercase())
        .collect();
    among.sort();
    field(among.join(",").as_bytes());
    Ok(format!("run-{:016x}", h.digest())[..16].to_string())
}

/// xxh3-128 of the whole file at `path` (its length included).
fn content_digest(path: &Path) -> Result<u128, Error> {
    use std::io::Read;
    let err = |error| Error::Input {
        path: path.to_path_buf(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        };
        h.update(&buf[..n]);
        len += n as u64;
    }
    h.update(&len.to_le_bytes());
    Ok(h.digest128())
}

/// The run id `opts` will use: the given one (checked) or the derived one
/// (computed on a blocking thread: it reads the inputs).
pub async fn resolve_run_id(opts: &RunOptions) -> Result<String, Error> {
    match &opts.run_id {
        Some(id) => {
            check_run_id(id)?;
            Ok(id.clone())
        }
        None => {
            let opts = opts.clone();
            tokio::task::spawn_blocking(move || derive_run_id(&opts))
                .await
                .map_err(|e| Error::Task {
                    what: "run id digest",
                    reason: e.to_string(),
                })?
        }
    }
}

/// A batch of labeled records: the material of chunk `number` of input `input`.
struct Batch {
    input: usize,
    number: u64,
    rows: Vec<Labeled>,
}

/// A transformed batch: its chunk file (none when every row was dropped) and
/// the chunk's root span.
struct Prepared {
    chunk: Option<ChunkFile>,
    span: Span,
}

struct Input {
    spec: SourceSpec,
    stem: String,
    display: String,
    size: u64,
}

struct Context {
    run_id: String,
    inputs: Vec<Input>,
    transform: Transform,
    progress: Arc<Progress>,
    output_dir: Option<PathBuf>,
    uploader: Option<Uploader>,
}

/// Runs an extraction to the end and returns its summary. `progress` is
/// updated as it goes (for a progress bar or `WatchRun`); `shutdown` stops it
/// between chunks (in-flight chunks finish) with [`Error::Cancelled`].
pub async fn extract(
    opts: RunOptions,
    progress: Arc<Progress>,
    shutdown: Shutdown,
) -> Result<Summary, Error> {
    opts.check()?;
    let run_id = resolve_run_id(&opts).await?;
    progress.set_run_id(&run_id);
    let transform = Transform::new(&opts.transform)?;
    let mut inputs = Vec::with_capacity(opts.sources.len());
    for spec in &opts.sources {
        // Fail before uploading anything when an input is missing.
        let size = std::fs::metadata(&spec.path)
            .map_err(|error| Error::Input {
                path: spec.path.clone(),
                error,
            })?
            .len();
        inputs.push(Input {
            stem: input_stem(&spec.path.to_string_lossy()),
            display: spec.path.display().to_string(),
            spec: spec.clone(),
            size,
        });
    }
    progress
        .input_bytes_total
        .store(inputs.iter().map(|i| i.size).sum(), Relaxed);
    if let Some(dir) = &opts.output_dir {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|error| Error::Output {
                path: dir.clone(),
                error,
            })?;
    }
    // Stops taking batches on the first error or on shutdown; what is in
    // flight finishes, so no chunk is left half-done. It also ends the
    // uploads' waits for a retry.
    let stop = shutdown.child();
    let uploader = match &opts.upload {
        Some(target) => {
            let uploader = Uploader::connect(target, &stop).await?;
            let removed = uploader.remove_stale_parts(&run_id).await?;
            progress.stale_removed.store(removed, Relaxed);
            Some(uploader)
        }
        None => None,
    };
    tracing::info!(
        run_id = %run_id,
        sources = inputs.len(),
        chunk_size = opts.chunk_size,
        workers = opts.workers,
        uploads = opts.uploads,
        "run started"
    );

    let ctx = Arc::new(Context {
        run_id: run_id.clone(),
        inputs,
        transform,
        progress: progress.clone(),
        output_dir: opts.output_dir.clone(),
        uploader,
    });
    let workers = opts.workers.max(1);
    let uploads = opts.uploads.max(1);
    let (tx, rx) = mpsc::channel::<Batch>(workers * 2);
    let reader = {
        let ctx = ctx.clone();
        let stop = stop.clone();
        let (chunk_size, strict) = (opts.chunk_size, opts.strict);
        tokio::task::spawn_blocking(move || read_all(&ctx, chunk_size, strict, &tx, &stop))
    };

    let mut pipeline = ReceiverStream::new(rx)
        .take_until(Box::pin({
            let stop = stop.clone();
            async move { stop.wait().await }
        }))
        .map(|batch| {
            let ctx = ctx.clone();
            async move {
                tokio::task::spawn_blocking(move || prepare(batch, &ctx))
                    .await
                    .map_err(|e| Error::Task {
                        what: "transform worker",
                        reason: e.to_string(),
                    })
            }
        })
        .buffer_unordered(workers)
        .map(|prepared| {
            let ctx = ctx.clone();
            async move { deliver(prepared?, &ctx).await }
        })
        .buffer_unordered(uploads);

    let mut failure = None;
    while let Some(result) = pipeline.next().await {
        if let Err(e) = result {
            tracing::error!(run_id = %run_id, error = %e, "run failing; letting chunks in flight finish");
            stop.trigger();
            failure.get_or_insert(e);
        }
    }
    // Dropping the pipeline drops the receiver, which unblocks the reader.
    drop(pipeline);
    if let Some(uploader) = &ctx.uploader {
        progress.retries.store(uploader.retries(), Relaxed);
    }
    let read = reader.await.map_err(|e| Error::Task {
        what: "reader",
        reason: e.to_string(),
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    read?;
    if shutdown.is_triggered() {
        return Err(Error::Cancelled);
    }
    if let Some(uploader) = &ctx.uploader {
        uploader
            .complete(&run_id, progress.files.load(Relaxed))
            .await?;
        progress.retries.store(uploader.retries(), Relaxed);
    }
    let summary = progress.summary();
    tracing::info!(
        run_id = %run_id,
        rows_read = summary.rows_read,
        rows_kept = summary.rows_kept,
        rows_dropped = summary.rows_dropped,
        bad_rows = summary.bad_rows,
        files = summary.files,
        files_skipped = summary.files_skipped,
        retries = summary.retries,
        stale_removed = summary.stale_removed,
        seconds = summary.elapsed.as_secs_f64(),
        "run finished"
    );
    Ok(summary)
}

/// The reader thread: every input in order, labels mapped, bad rows counted
/// (or, with `strict`, the end of the run), records cut into batches.
fn read_all(
    ctx: &Context,
    chunk_size: usize,
    strict: bool,
    tx: &mpsc::Sender<Batch>,
    stop: &Shutdown,
) -> Result<(), Error> {
    let progress = &ctx.progress;
    let mut done_bytes = 0;
    for (index, input) in ctx.inputs.iter().enumerate() {
        let mut source = crate::source::open(&input.spec.path)?;
        let bad = |row: BadRow| -> Result<(), Error> {
            if strict {
                return Err(Error::BadRow {
                    path: input.display.clone(),
                    line: row.line,
                    reason: format!("{}: {}", row.kind, row.reason),
                });
            }
            tracing::debug!(file = %input.display, line = row.line, kind = %row.kind, reason = %row.reason, "bad row skipped");
            progress.bad_row(&input.display, row);
            Ok(())
        };
        let mut number = 0;
        let mut rows = Vec::with_capacity(chunk_size);
        let send = |rows: Vec<Labeled>, number: u64, bytes: u64| -> bool {
            progress.input_bytes_read.store(done_bytes + bytes, Relaxed);
            !stop.is_triggered()
                && tx
                    .blocking_send(Batch {
                        input: index,
                        number,
                        rows,
                    })
                    .is_ok()
        };
        while let Some(item) = source.next_item()? {
            match item {
                Item::Record(record) => match transform::label(input.spec.labels, record) {
                    Ok(row) => {
                        progress.rows_read.fetch_add(1, Relaxed);
                        rows.push(row);
                    }
                    Err(row) => bad(row)?,
                },
                Item::Bad(row) => bad(row)?,
            }
            if rows.len() == chunk_size {
                let full = std::mem::replace(&mut rows, Vec::with_capacity(chunk_size));
                if !send(full, number, source.bytes_read()) {
                    return Ok(());
                }
                number += 1;
            }
        }
        if !rows.is_empty() && !send(rows, number, source.bytes_read()) {
            return Ok(());
        }
        done_bytes += input.size;
        progress.input_bytes_read.store(done_bytes, Relaxed);
    }
    Ok(())
}

/// A transform worker's job: one batch → one chunk file, inside the chunk's
/// root span (a new trace per chunk file).
fn prepare(batch: Batch, ctx: &Context) -> Prepared {
    let input = &ctx.inputs[batch.input];
    let name = chunk_file_name(&ctx.run_id, &input.stem, batch.number);
    let span = tracing::info_span!(
        parent: None,
        "extract.chunk",
        etl.run = %ctx.run_id,
        etl.file = %name,
        etl.source = %input.spec.name,
        rows_in = batch.rows.len() as u64,
        rows_kept = tracing::field::Empty,
    );
    let _entered = span.enter();
    let mut kept = Vec::with_capacity(batch.rows.len());
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    for row in batch.rows {
        match ctx.transform.apply(row, &input.spec.name) {
            Outcome::Keep(out) => kept.push(out),
            Outcome::Drop(reason) => *dropped.entry(reason.key()).or_default() += 1,
        }
    }
    span.record("rows_kept", kept.len() as u64);
    ctx.progress.rows_kept.fetch_add(kept.len() as u64, Relaxed);
    ctx.progress.dropped(&dropped);
    let chunk =
        (!kept.is_empty()).then(|| chunk::encode(&ctx.run_id, &input.stem, batch.number, &kept));
    drop(_entered);
    Prepared { chunk, span }
}

/// Writes and/or uploads one chunk file.
async fn deliver(prepared: Prepared, ctx: &Context) -> Result<(), Error> {
    let Prepared { chunk, span } = prepared;
    // Every row of the batch was dropped: there is no file to make.
    let Some(chunk) = chunk else { return Ok(()) };
    let progress = &ctx.progress;
    async {
        let mut written = false;
        if let Some(dir) = &ctx.output_dir {
            write_local(dir, &chunk).await?;
            written = true;
        }
        if let Some(uploader) = &ctx.uploader {
            let delivered = uploader.deliver(&chunk, &span).await?;
            if delivered.skipped {
                progress.files_skipped.fetch_add(1, Relaxed);
            } else {
                written = true;
            }
        }
        if written {
            progress.bytes.fetch_add(chunk.data.len() as u64, Relaxed);
        }
        progress.files.fetch_add(1, Relaxed);
        Ok(())
    }
    .instrument(span.clone())
    .await
}

/// Temporary name then rename, like the uploads: no reader sees half a file.
async fn write_local(dir: &Path, chunk: &ChunkFile) -> Result<(), Error> {
    let part = dir.join(temp_name(&chunk.name));
    let target = dir.join(&chunk.name);
    let err = |error| Error::Output {
        path: target.clone(),
        error,
    };
    tokio::fs::write(&part, &chunk.data).await.map_err(err)?;
    tokio::fs::rename(&part, &target).await.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse() {
        let s = SourceSpec::parse("shop=/data/a.csv", LabelScheme::Polarity).expect("valid");
        assert_eq!(s.name, "shop");
        assert_eq!(s.path, PathBuf::from("/data/a.csv"));
        assert_eq!(s.labels, LabelScheme::Polarity);
        let s =
            SourceSpec::parse("full=/data/x:y.csv:stars", LabelScheme::Polarity).expect("valid");
        assert_eq!(s.path, PathBuf::from("/data/x:y.csv"));
        assert_eq!(s.labels, LabelScheme::Stars);
        assert!(SourceSpec::parse("nopath", LabelScheme::Polarity).is_err());
        assert!(SourceSpec::parse("=a.csv", LabelScheme::Polarity).is_err());
    }

    #[test]
    fn run_ids_are_checked() {
        assert!(check_run_id("run-0123abcd").is_ok());
        for bad in ["", "a__b", "../x", "a/b", ".x", "a b"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn derived_run_id_depends_on_input_and_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "1,a,b\n").expect("write");
        let spec = SourceSpec {
            name: "amazon".into(),
            path: path.clone(),
            labels: LabelScheme::Polarity,
        };
        let opts = RunOptions::new(vec![spec]);
        let a = derive_run_id(&opts).expect("id");
        assert_eq!(a, derive_run_id(&opts).expect("id"));
        assert!(a.starts_with("run-") && a.len() == 16, "{a}");
        check_run_id(&a).expect("derived ids are valid");
        let mut stemmed = opts.clone();
        stemmed.transform.stem = true;
        assert_ne!(a, derive_run_id(&stemmed).expect("id"));
        let mut more_workers = opts.clone();
        more_workers.workers += 3;
        assert_eq!(a, derive_run_id(&more_workers).expect("id"));
        // The same content written again elsewhere (new path, new
        // modification time): the same run.
        let copy_dir = dir.path().join("copy");
        std::fs::create_dir(&copy_dir).expect("mkdir");
        std::fs::write(copy_dir.join("in.csv"), "1,a,b\n").expect("write");
        let mut copied = opts.clone();
        copied.sources[0].path = copy_dir.join("in.csv");
        assert_eq!(a, derive_run_id(&copied).expect("id"));
        // Another stem names other files: another run.
        std::fs::write(dir.path().join("other.csv"), "1,a,b\n").expect("write");
        let mut renamed = opts.clone();
        renamed.sources[0].path = dir.path().join("other.csv");
        assert_ne!(a, derive_run_id(&renamed).expect("id"));
        std::fs::write(&path, "1,a,b\n2,c,d\n").expect("write");
        assert_ne!(a, derive_run_id(&opts).expect("id"));
        std::fs::write(&path, "1,a,c\n").expect("write");
        assert_ne!(
            a,
            derive_run_id(&opts).expect("id"),
            "same size, other bytes"
        );
    }

    #[test]
    fn duplicate_stems_are_refused() {
        let mut opts = RunOptions::new(vec![
            SourceSpec::parse("a=/x/train.csv", LabelScheme::Polarity).expect("valid"),
            SourceSpec::parse("b=/y/train.csv", LabelScheme::Polarity).expect("valid"),
        ]);
        opts.output_dir = Some("/tmp".into());
        let e = opts.check().expect_err("same stem");
        assert!(e.to_string().contains("train"), "{e}");
    }
}
