//! The Kafka-Connect-compatible REST API, so tools and scripts written for
//! Kafka Connect (`curl -X POST :8083/connectors -d @sink.json`) work here:
//! same paths, status codes and JSON shapes, errors as
//! `{"error_code", "message"}`. Apache Kafka's `docs/connect.html` (and its
//! `ConnectorsResource`) is the reference.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /` | 200 `{version, commit, kafka_cluster_id}` |
//! | `GET /connector-plugins[?connectorsOnly=false]` | 200 plugins (and converters) |
//! | `GET /connector-plugins/{class}/config` | 200 option definitions; 404 |
//! | `PUT /connector-plugins/{class}/config/validate` | 200 `{name, error_count, groups, configs}`; 400 |
//! | `GET /connectors[?expand=status&expand=info]` | 200 |
//! | `POST /connectors` (`initial_state` RUNNING, PAUSED, STOPPED) | 201; 400; 409 |
//! | `GET /connectors/{name}` | 200; 404 |
//! | `DELETE /connectors/{name}` | 204; 404 |
//! | `GET`, `PUT`, `PATCH /connectors/{name}/config` | 200 (PUT: 201 when new); 400; 404 |
//! | `GET /connectors/{name}/status` | 200; 404 |
//! | `PUT /connectors/{name}/pause`, `…/resume` | 202; 404 |
//! | `PUT /connectors/{name}/stop` | 204 (as Kafka Connect: no body); 404 |
//! | `POST /connectors/{name}/restart?includeTasks=&onlyFailed=` | 204 when both are false, else 202 with the status; 404 |
//! | `GET /connectors/{name}/tasks`, `…/tasks-config` | 200; 404 |
//! | `GET /connectors/{name}/tasks/{id}/status` | 200; 404 |
//! | `POST /connectors/{name}/tasks/{id}/restart` | 204; 404 |
//! | `GET /connectors/{name}/topics`, `PUT …/topics/reset` | 200, 202; 404 |
//! | `GET /connectors/{name}/offsets` | 200 `{offsets: [{partition, offset}]}`; 404 |
//! | `PATCH`, `DELETE /connectors/{name}/offsets` | 200 `{message}`; 400 unless STOPPED; 404; 409 |
//! | `GET /admin/loggers`, `GET /admin/loggers/{name}` | 200 |
//! | `PUT /admin/loggers/{name}` | 501: levels are fixed at start (`RUST_LOG`) |
//!
//! # Status
//! States are Kafka Connect's (UNASSIGNED, RUNNING, PAUSED, STOPPED, FAILED,
//! RESTARTING), derived from the real tasks (see `registry`); a FAILED
//! connector or task carries the error as `trace`; `worker_id` is this
//! worker's REST `host:port`. One extra key, `metrics`, holds the counters:
//! the connector's totals (`files_finished`, `files_failed`, `records`,
//! `records_skipped`, `bytes`, `lag`, `stalled`, `last_error`) and the same per
//! task under `metrics.tasks`.
//!
//! # Differences from Kafka Connect
//! - A connector is no more than its tasks: restarting "the connector
//!   instance" (`POST …/restart` without parameters) restarts its tasks.
//! - The source runs one task (`tasks.max` is how many files it processes at
//!   once); the sink runs `tasks.max` tasks sharing the partitions.
//! - Source offsets are `{"file": name}` → `{"size", "mtime"}` of the files
//!   sent with `cleanup.policy=NONE`. A sink offset reset to `null` commits the
//!   partition's earliest offset.
//! - `validate` reports an unknown key as an error; create accepts it and
//!   logs a warning.
//!
//! # Security
//! With `ETL_API_TOKEN` (or a token file) set, every path needs
//! `authorization: Bearer <token>` (else 401, `{"error_code":401,…}`), and
//! `--tls-cert`/`--tls-key` serve TLS (`etl_service::http`). No response holds
//! a secret: every `*.password`, `*.passphrase` and secret-looking option is
//! `[hidden]`, as are URL passwords, in configs (info, config, tasks,
//! `expand=info`), `validate` values, statuses and error messages (`secrets`).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::{
    Error,
    connector::{self, ConnectorConfig, Kind},
    options::{self, Verdict},
    registry::{ConnectorOffset, ConnectorView, Registry, TargetState, TaskView},
    secrets,
    status::State as TaskState,
};

/// What `GET /` reports as `commit`: the git commit the binary was built from
/// (`ETL_GIT_COMMIT`, or CI's `GITHUB_SHA`, at build time), else the version.
pub(crate) const COMMIT: &str = match option_env!("ETL_GIT_COMMIT") {
    Some(c) => c,
    None => match option_env!("GITHUB_SHA") {
        Some(c) => c,
        None => env!("CARGO_PKG_VERSION"),
    },
};

pub(crate) fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/connector-plugins", get(plugins))
        .route("/connector-plugins/{class}/config", get(plugin_config))
        .route("/connector-plugins/{class}/config/validate", put(validate))
        .route("/connectors", get(list).post(create))
        .route("/connectors/{name}", get(info).delete(delete))
        .route(
            "/connectors/{name}/config",
            get(config).put(put_config).patch(patch_config),
        )
        .route("/connectors/{name}/status", get(status))
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/stop", put(stop))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connectors/{name}/tasks", get(tasks))
        .route("/connectors/{name}/tasks-config", get(tasks_config))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(restart_task),
        )
        .route("/connectors/{name}/topics", get(topics))
        .route("/connectors/{name}/topics/reset", put(reset_topics))
        .route(
            "/connectors/{name}/offsets",
            get(offsets).patch(alter_offsets).delete(reset_offsets),
        )
        .route("/admin/loggers", get(loggers))
        .route("/admin/loggers/{logger}", get(logger).put(set_logger))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(registry)
}

/// The answer to a call without the API token (`etl_service::http` checks
/// it): 401 in Kafka Connect's error shape, with `WWW-Authenticate: Bearer`.
pub(crate) fn unauthorized(refusal: etl_service::auth::Refusal) -> Response {
    let mut response =
        ApiError(StatusCode::UNAUTHORIZED, refusal.message().to_string()).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"connect-manager\""),
    );
    response
}

/// An API error in Kafka Connect's shape.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.0.as_u16(), "message": self.1});
        (self.0, Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidConfig { .. } | Error::InvalidRequest(_) | Error::WrongState(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::NotFound(_) | Error::TaskNotFound { .. } => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) | Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        // 415 for a missing JSON content type, 400 for a body that does not parse.
        ApiError(e.status(), e.body_text())
    }
}

type ApiResult = Result<Response, ApiError>;

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "HTTP 404 Not Found".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "HTTP 405 Method Not Allowed".into(),
    )
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// This worker's id: the REST listener's `host:port` once the service set it,
/// else the address the client reached us at.
fn worker_id(registry: &Registry, headers: &HeaderMap) -> String {
    registry
        .worker_id()
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "connect-manager".into())
}

fn info_json(v: &ConnectorView) -> Json_ {
    json!({
        "name": v.name,
        "config": v.config,
        "tasks": v.tasks.iter().map(|t| json!({"connector": v.name, "task": t.id})).collect::<Vec<_>>(),
        "type": v.type_name(),
    })
}

fn metrics_json(s: &crate::status::StatusSnapshot) -> serde_json::Map<String, Json_> {
    [
        ("files_finished", json!(s.files_finished)),
        ("files_failed", json!(s.files_failed)),
        ("records", json!(s.records)),
        ("records_skipped", json!(s.skipped)),
        ("bytes", json!(s.bytes)),
        ("lag", json!(s.lag)),
        ("stalled", json!(s.stalled)),
        ("last_error", json!(s.last_error)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn task_json(t: &TaskView, worker: &str) -> Json_ {
    let worker = t.worker.as_deref().unwrap_or(worker);
    let mut task = json!({"id": t.id, "state": t.state.as_str(), "worker_id": worker});
    if let (Some(trace), Some(obj)) = (t.trace(), task.as_object_mut()) {
        obj.insert("trace".into(), json!(trace));
    }
    task
}

fn status_json(v: &ConnectorView, worker: &str) -> Json_ {
    let mut connector = json!({"state": v.state.as_str(), "worker_id": worker});
    if v.state == TaskState::Failed
        && let Some(obj) = connector.as_object_mut()
    {
        obj.insert("trace".into(), json!(v.trace));
    }
    let mut metrics = metrics_json(&v.status);
    metrics.insert(
        "tasks".into(),
        v.tasks
            .iter()
            .map(|t| {
                let mut m = metrics_json(&t.status);
                m.insert("id".into(), json!(t.id));
                Json_::Object(m)
            })
            .collect(),
    );
    json!({
        "name": v.name,
        "connector": connector,
        "tasks": v.tasks.iter().map(|t| task_json(t, worker)).collect::<Vec<_>>(),
        "type": v.type_name(),
        "metrics": metrics,
    })
}

/// Kafka Connect configs are string maps, but JSON files often hold numbers
/// and booleans: accept those as their text.
fn string_value(k: &str, v: Json_) -> Result<Option<String>, ApiError> {
    Ok(match v {
        Json_::String(s) => Some(s),
        Json_::Number(n) => Some(n.to_string()),
        Json_::Bool(b) => Some(b.to_string()),
        Json_::Null => None,
        _ => {
            return Err(bad_request(format!(
                "config value of {k:?} must be a string, number or boolean"
            )));
        }
    })
}

fn string_map(v: BTreeMap<String, Json_>) -> Result<BTreeMap<String, String>, ApiError> {
    v.into_iter()
        .map(|(k, v)| Ok((k.clone(), string_value(&k, v)?.unwrap_or_default())))
        .collect()
}

/// `key=value` pairs of a query string, in order (keys may repeat: `expand`).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn query_bool(pairs: &[(String, String)], key: &str) -> Result<bool, ApiError> {
    match pairs.iter().rev().find(|(k, _)| k == key) {
        None => Ok(false),
        Some((_, v)) => match v.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            other => Err(bad_request(format!(
                "query parameter {key} must be true or false, got {other:?}"
            ))),
        },
    }
}

async fn root(State(registry): State<Arc<Registry>>) -> Json<Json_> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": COMMIT,
        "kafka_cluster_id": registry.cluster_id().await,
    }))
}

async fn plugins(RawQuery(query): RawQuery) -> ApiResult {
    let pairs = query_pairs(query.as_deref());
    let connectors_only = match pairs.iter().rev().find(|(k, _)| k == "connectorsOnly") {
        Some((_, v)) => !v.eq_ignore_ascii_case("false"),
        None => true,
    };
    let version = env!("CARGO_PKG_VERSION");
    let plugin =
        |class: &str, kind: &str| json!({"class": class, "type": kind, "version": version});
    let mut all = vec![
        plugin(connector::SOURCE_CLASSES[1], "source"),
        plugin(connector::SINK_CLASSES[1], "sink"),
    ];
    if !connectors_only {
        all.extend([
            plugin(options::STRING_CONVERTER, "converter"),
            plugin(options::JSON_CONVERTER, "converter"),
            plugin(options::HEADER_CONVERTER, "header_converter"),
        ]);
    }
    Ok(Json(all).into_response())
}

/// The kind a plugin path names: a class name, short or full, or an alias
/// ending the full name (Kafka Connect accepts those).
fn plugin_kind(class: &str) -> Option<Kind> {
    connector::kind_of_class(class).or_else(|| {
        let short = class.trim_end_matches("Connector");
        connector::SOURCE_CLASSES
            .iter()
            .chain(connector::SINK_CLASSES)
            .find(|c| !short.is_empty() && c.trim_end_matches("Connector").ends_with(short))
            .and_then(|c| connector::kind_of_class(c))
    })
}

fn definition_json(d: &options::OptionDef, order: usize) -> Json_ {
    json!({
        "name": d.key,
        "type": d.ty,
        "required": d.required,
        "default_value": d.default,
        "importance": d.importance,
        "documentation": d.documentation(),
        "group": d.group,
        "order": order,
        "width": "NONE",
        "display_name": d.key,
        "dependents": [],
    })
}

async fn plugin_config(Path(class): Path<String>) -> ApiResult {
    let kind = plugin_kind(&class).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("Unknown plugin {class}: expected one of the connector classes of GET /connector-plugins"),
        )
    })?;
    let defs: Vec<Json_> = options::catalog(kind)
        .enumerate()
        .map(|(i, d)| definition_json(d, i + 1))
        .collect();
    Ok(Json(defs).into_response())
}

/// The key an error message is about: the longest known key it names.
fn key_named_in<'a>(message: &str, keys: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    keys.filter(|k| message.contains(k)).max_by_key(|k| k.len())
}

/// Kafka Connect's `PUT /connector-plugins/{class}/config/validate`: every
/// option of the class with its value and errors, plus one entry per unknown
/// key; `error_count` counts every error (unknown keys included: validate is
/// stricter than create, which only warns about them).
async fn validate(
    Path(class): Path<String>,
    body: Result<Json<BTreeMap<String, Json_>>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let mut config = string_map(body)?;
    let kind = plugin_kind(&class)
        .ok_or_else(|| bad_request(format!("Unknown connector plugin {class}")))?;
    match config.get("connector.class") {
        Some(included) if connector::kind_of_class(included) != Some(kind) => {
            return Err(bad_request(format!(
                "Included connector type {included} does not match request type {class}"
            )));
        }
        Some(_) => {}
        None => {
            let full = match kind {
                Kind::Source => connector::SOURCE_CLASSES[1],
                Kind::Sink => connector::SINK_CLASSES[1],
            };
            config.insert("connector.class".into(), full.into());
        }
    }
    let name = config
        .get("name")
        .filter(|n| !n.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "validate".into());
    let review = ConnectorConfig::review(&name, &config);

    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Err(e) = &review.parsed {
        let message = match e {
            Error::InvalidConfig { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let key = key_named_in(
            &message,
            config
                .keys()
                .map(String::as_str)
                .chain(options::catalog(kind).map(|d| d.key)),
        )
        .unwrap_or("connector.class")
        .to_string();
        errors.entry(key).or_default().push(message);
    }
    for f in &review.findings {
        if f.verdict != Verdict::NoEffect {
            errors
                .entry(f.key.clone())
                .or_default()
                .push(f.message.clone());
        }
    }

    let mut groups: Vec<&str> = Vec::new();
    let mut configs = Vec::new();
    let value_json = |key: &str,
                      ty: &str,
                      value: Option<&str>,
                      errors: Vec<String>,
                      recommended: &[&str]| {
        let shown = match (ty, value) {
            ("PASSWORD", Some(v)) if !v.is_empty() => Some(secrets::HIDDEN.to_string()),
            (_, Some(v)) => Some(secrets::masked_value(key, v)),
            (_, None) => None,
        };
        json!({
            "name": key,
            "value": shown,
            "recommended_values": recommended.iter().filter(|r| !r.is_empty()).collect::<Vec<_>>(),
            "errors": errors,
            "visible": true,
        })
    };
    for (i, d) in options::catalog(kind).enumerate() {
        if !groups.contains(&d.group) {
            groups.push(d.group);
        }
        let value = config.get(d.key).map(String::as_str).or(d.default);
        let errs = errors.remove(d.key).unwrap_or_default();
        configs.push(json!({
            "definition": definition_json(d, i + 1),
            "value": value_json(d.key, d.ty, value, errs, d.recommended_values()),
        }));
    }
    // Keys outside the catalog: unknown ones, and those a parser reads that
    // the catalog does not describe yet.
    for (key, errs) in std::mem::take(&mut errors) {
        if !groups.contains(&"Unknown") {
            groups.push("Unknown");
        }
        let value = config.get(&key).map(String::as_str);
        configs.push(json!({
            "definition": {
                "name": key, "type": "STRING", "required": false, "default_value": null,
                "importance": "LOW", "documentation": "Not an option of this connector.",
                "group": "Unknown", "order": configs.len() + 1, "width": "NONE",
                "display_name": key, "dependents": [],
            },
            "value": value_json(&key, "STRING", value, errs, &[]),
        }));
    }
    let error_count: usize = configs
        .iter()
        .map(|c| c["value"]["errors"].as_array().map_or(0, Vec::len))
        .sum();
    let full_name = match kind {
        Kind::Source => connector::SOURCE_CLASSES[1],
        Kind::Sink => connector::SINK_CLASSES[1],
    };
    Ok(Json(json!({
        "name": full_name,
        "error_count": error_count,
        "groups": groups,
        "configs": configs,
    }))
    .into_response())
}

async fn list(
    State(registry): State<Arc<Registry>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let expand: Vec<String> = query_pairs(query.as_deref())
        .into_iter()
        .filter(|(k, _)| k == "expand")
        .map(|(_, v)| v)
        .collect();
    let all = registry.list().await;
    if expand.is_empty() {
        return Ok(Json(all.into_iter().map(|v| v.name).collect::<Vec<_>>()).into_response());
    }
    let worker = worker_id(&registry, &headers);
    let out: serde_json::Map<String, Json_> = all
        .iter()
        .map(|v| {
            let mut e = serde_json::Map::new();
            for x in &expand {
                match x.as_str() {
                    "status" => {
                        e.insert("status".into(), status_json(v, &worker));
                    }
                    "info" => {
                        e.insert("info".into(), info_json(v));
                    }
                    other => tracing::debug!(expansion = other, "unknown expansion ignored"),
                }
            }
            (v.name.clone(), Json_::Object(e))
        })
        .collect();
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
struct CreateBody {
    name: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, Json_>,
    initial_state: Option<String>,
}

async fn create(
    State(registry): State<Arc<Registry>>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let name = body.name.unwrap_or_default().trim().to_string();
    let config = string_map(body.config)?;
    let initial = match body.initial_state.as_deref() {
        None => TargetState::Started,
        Some(s) => TargetState::from_initial_state(s).ok_or_else(|| {
            bad_request(format!(
                "initial_state must be RUNNING, PAUSED or STOPPED, got {s:?}"
            ))
        })?,
    };
    let config = check_config_name(&name, config)?;
    let (view, _) = registry.put(&name, config, Some(initial)).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/connectors/{name}"))],
        Json(info_json(&view)),
    )
        .into_response())
}

/// A `name` inside the config must agree with the connector's name.
fn check_config_name(
    name: &str,
    config: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    match config.get("name") {
        Some(n) if n != name => Err(bad_request(format!(
            "connector name {name:?} does not match the config's name {n:?}"
        ))),
        _ => Ok(config),
    }
}

async fn info(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    let v = registry.get(&name).await?;
    Ok(Json(info_json(&v)).into_response())
}

async fn delete(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    registry.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn config(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    let v = registry.get(&name).await?;
    Ok(Json(v.config).into_response())
}

async fn put_config(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
    body: Result<Json<BTreeMap<String, Json_>>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let config = check_config_name(&name, string_map(body)?)?;
    let (view, created) = registry.put(&name, config, None).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(info_json(&view))).into_response())
}

/// Sets the keys given, removes those given as `null`.
async fn patch_config(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
    body: Result<Json<BTreeMap<String, Json_>>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let mut patch = BTreeMap::new();
    for (k, v) in body {
        let value = string_value(&k, v)?;
        if k == "name" && value.as_deref().is_some_and(|n| n != name) {
            return Err(bad_request(format!(
                "connector name {name:?} does not match the patch's name {value:?}"
            )));
        }
        patch.insert(k, value);
    }
    let view = registry.patch(&name, patch).await?;
    Ok(Json(info_json(&view)).into_response())
}

async fn status(
    State(registry): State<Arc<Registry>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let v = registry.get(&name).await?;
    Ok(Json(status_json(&v, &worker_id(&registry, &headers))).into_response())
}

async fn pause(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    registry.pause(&name).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn resume(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    registry.resume(&name).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn stop(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    registry.stop(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn restart(
    State(registry): State<Arc<Registry>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let pairs = query_pairs(query.as_deref());
    let include_tasks = query_bool(&pairs, "includeTasks")?;
    let only_failed = query_bool(&pairs, "onlyFailed")?;
    let plan = registry.restart(&name, include_tasks, only_failed).await?;
    if !include_tasks && !only_failed {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(status_json(&plan, &worker_id(&registry, &headers))),
    )
        .into_response())
}

async fn tasks(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    let v = registry.get(&name).await?;
    let tasks: Vec<Json_> = v
        .tasks
        .iter()
        .map(|t| json!({"id": {"connector": v.name, "task": t.id}, "config": v.config}))
        .collect();
    Ok(Json(tasks).into_response())
}

/// The deprecated `tasks-config`: `{"<name>-<id>": config}`.
async fn tasks_config(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
) -> ApiResult {
    let v = registry.get(&name).await?;
    let out: serde_json::Map<String, Json_> = v
        .tasks
        .iter()
        .map(|t| (format!("{}-{}", v.name, t.id), json!(v.config)))
        .collect();
    Ok(Json(out).into_response())
}

/// The task `id` of `v`, or 404.
fn find_task<'a>(v: &'a ConnectorView, id: &str) -> Result<&'a TaskView, ApiError> {
    id.parse::<u32>()
        .ok()
        .and_then(|id| v.tasks.iter().find(|t| t.id == id))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("task {id} of connector {:?} not found", v.name),
            )
        })
}

async fn task_status(
    State(registry): State<Arc<Registry>>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    let v = registry.get(&name).await?;
    let task = find_task(&v, &id)?;
    Ok(Json(task_json(task, &worker_id(&registry, &headers))).into_response())
}

async fn restart_task(
    State(registry): State<Arc<Registry>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    let v = registry.get(&name).await?;
    let task = find_task(&v, &id)?;
    registry.restart_task(&name, task.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn topics(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    let v = registry.get(&name).await?;
    Ok(Json(json!({ v.name.clone(): {"topics": v.active_topics} })).into_response())
}

async fn reset_topics(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
) -> ApiResult {
    registry.reset_topics(&name).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn offsets(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    let offsets = registry.offsets(&name).await?;
    Ok(Json(json!({ "offsets": offsets })).into_response())
}

#[derive(Deserialize)]
struct OffsetsBody {
    #[serde(default)]
    offsets: Vec<ConnectorOffset>,
}

async fn alter_offsets(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
    body: Result<Json<OffsetsBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let message = registry.alter_offsets(&name, body.offsets).await?;
    Ok(Json(json!({ "message": message })).into_response())
}

async fn reset_offsets(
    State(registry): State<Arc<Registry>>,
    Path(name): Path<String>,
) -> ApiResult {
    let message = registry.reset_offsets(&name).await?;
    Ok(Json(json!({ "message": message })).into_response())
}

// ---- /admin/loggers ------------------------------------------------------------

/// The log filter in force: `RUST_LOG` as read once at start (etl-telemetry's
/// default is `info` with quieter network crates).
fn log_filter() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())
}

/// Log4j's level names for tracing's.
fn level_name(level: &str) -> Option<&'static str> {
    Some(match level.trim().to_ascii_lowercase().as_str() {
        "trace" => "TRACE",
        "debug" => "DEBUG",
        "info" => "INFO",
        "warn" | "warning" => "WARN",
        "error" => "ERROR",
        "off" => "OFF",
        _ => return None,
    })
}

/// `root` and each `target=level` directive of the filter (span and field
/// filters are left out: they have no Log4j twin).
fn logger_levels(filter: &str) -> Vec<(String, &'static str)> {
    let mut out = vec![("root".to_string(), "ERROR")];
    for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if d.contains('[') {
            continue;
        }
        match d.split_once('=') {
            Some((target, level)) => {
                if let Some(level) = level_name(level) {
                    out.push((target.to_string(), level));
                }
            }
            None => match level_name(d) {
                Some(level) => out[0].1 = level,
                // A bare target enables everything for it.
                None => out.push((d.to_string(), "TRACE")),
            },
        }
    }
    out
}

/// The level a logger gets: its most specific directive (`a::b` covers
/// `a::b::c`; Java's `a.b` spelling works too), else root's.
fn effective_level(levels: &[(String, &'static str)], logger: &str) -> &'static str {
    let logger = logger.replace('.', "::");
    levels
        .iter()
        .skip(1)
        .filter(|(t, _)| logger == *t || logger.starts_with(&format!("{t}::")))
        .max_by_key(|(t, _)| t.len())
        .or(levels.first())
        .map_or("INFO", |(_, l)| l)
}

async fn loggers() -> Json<Json_> {
    let levels = logger_levels(&log_filter());
    Json(Json_::Object(
        levels
            .into_iter()
            .map(|(t, l)| (t, json!({"level": l, "last_modified": null})))
            .collect(),
    ))
}

async fn logger(Path(logger): Path<String>) -> Json<Json_> {
    let levels = logger_levels(&log_filter());
    Json(json!({"level": effective_level(&levels, &logger), "last_modified": null}))
}

async fn set_logger(Path(logger): Path<String>) -> ApiError {
    Error::Unsupported(format!(
        "log levels cannot be changed while connect-manager runs: it reads them once from RUST_LOG (now {:?}); restart it with RUST_LOG=\"{},{logger}=<level>\"",
        log_filter(),
        log_filter()
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_read_as_loggers() {
        let levels = logger_levels("warn,connect_manager=debug,h2=off,rdkafka,x[span]=trace");
        assert_eq!(
            levels,
            vec![
                ("root".to_string(), "WARN"),
                ("connect_manager".to_string(), "DEBUG"),
                ("h2".to_string(), "OFF"),
                ("rdkafka".to_string(), "TRACE"),
            ]
        );
        assert_eq!(effective_level(&levels, "connect_manager::sink"), "DEBUG");
        assert_eq!(effective_level(&levels, "connect_manager.sink"), "DEBUG");
        assert_eq!(effective_level(&levels, "connect_managerx"), "WARN");
        assert_eq!(effective_level(&levels, "root"), "WARN");
    }

    #[test]
    fn plugin_paths_take_short_full_and_alias_names() {
        assert_eq!(plugin_kind("JdbcSinkConnector"), Some(Kind::Sink));
        assert_eq!(
            plugin_kind("io.confluent.connect.sftp.SftpCsvSourceConnector"),
            Some(Kind::Source)
        );
        assert_eq!(plugin_kind("JdbcSink"), Some(Kind::Sink));
        assert_eq!(plugin_kind("FileStreamSource"), None);
        assert_eq!(plugin_kind(""), None);
    }

    #[test]
    fn an_error_is_put_on_the_longest_key_it_names() {
        let keys = ["topics", "topics.regex", "connection.url"];
        assert_eq!(
            key_named_in("option \"topics.regex\" is bad", keys.iter().copied()),
            Some("topics.regex")
        );
        assert_eq!(key_named_in("nothing here", keys.iter().copied()), None);
    }
}
