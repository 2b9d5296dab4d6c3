//! The Kafka-Connect-compatible REST API, so tools and scripts written for
//! Kafka Connect (`curl -X POST :8083/connectors -d @sink.json`) work here:
//! same paths, same JSON shapes, errors as `{"error_code", "message"}`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::{
    Error, connector,
    registry::{ConnectorView, Registry},
};

/// The worker id reported in statuses (there is one worker: this process).
const WORKER_ID: &str = "connect-manager";

pub(crate) fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/connector-plugins", get(plugins))
        .route("/connectors", get(list).post(create))
        .route("/connectors/{name}", get(info).delete(delete))
        .route("/connectors/{name}/config", get(config).put(put_config))
        .route("/connectors/{name}/status", get(status))
        .with_state(registry)
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
            Error::InvalidConfig { .. } | Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }
}

type ApiResult = Result<Response, ApiError>;

fn info_json(v: &ConnectorView) -> Json_ {
    json!({
        "name": v.name,
        "config": v.config,
        "tasks": [{"connector": v.name, "task": 0}],
        "type": v.kind.as_str(),
    })
}

/// Kafka Connect configs are string maps, but JSON files often hold numbers
/// and booleans: accept those as their text.
fn string_map(v: BTreeMap<String, Json_>) -> Result<BTreeMap<String, String>, ApiError> {
    v.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Json_::String(s) => s,
                Json_::Number(n) => n.to_string(),
                Json_::Bool(b) => b.to_string(),
                Json_::Null => String::new(),
                _ => {
                    return Err(ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("config value of {k:?} must be a string, number or boolean"),
                    ));
                }
            };
            Ok((k, s))
        })
        .collect()
}

async fn root() -> Json<Json_> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": "file-etl",
        "kafka_cluster_id": "",
    }))
}

async fn plugins() -> Json<Json_> {
    let plugin = |class: &str, kind: &str| json!({"class": class, "type": kind, "version": env!("CARGO_PKG_VERSION")});
    Json(json!([
        plugin(connector::SOURCE_CLASSES[1], "source"),
        plugin(connector::SINK_CLASSES[1], "sink"),
    ]))
}

async fn list(State(registry): State<Arc<Registry>>) -> Json<Vec<String>> {
    Json(registry.list().await.into_iter().map(|v| v.name).collect())
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    #[serde(default)]
    config: BTreeMap<String, Json_>,
}

async fn create(
    State(registry): State<Arc<Registry>>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let config = string_map(body.config)?;
    check_config_name(&body.name, &config)?;
    let (view, _) = registry.put(&body.name, config, true).await?;
    Ok((StatusCode::CREATED, Json(info_json(&view))).into_response())
}

/// A `name` inside the config must agree with the connector's name.
fn check_config_name(name: &str, config: &BTreeMap<String, String>) -> Result<(), ApiError> {
    match config.get("name") {
        Some(n) if n != name => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("connector name {name:?} does not match the config's name {n:?}"),
        )),
        _ => Ok(()),
    }
}

async fn info(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    let v = registry.get(&name).await?;
    Ok(Json(info_json(&v)).into_response())
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
    let config = string_map(body)?;
    check_config_name(&name, &config)?;
    let (view, created) = registry.put(&name, config, false).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(info_json(&view))).into_response())
}

async fn status(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    let v = registry.get(&name).await?;
    let state = v.status.state.as_str();
    let mut task = json!({"id": 0, "state": state, "worker_id": WORKER_ID});
    if v.status.state == crate::status::State::Failed
        && let Some(obj) = task.as_object_mut()
    {
        obj.insert("trace".into(), json!(v.status.last_error));
    }
    Ok(Json(json!({
        "name": v.name,
        "connector": {"state": "RUNNING", "worker_id": WORKER_ID},
        "tasks": [task],
        "type": v.kind.as_str(),
        "metrics": {
            "files_finished": v.status.files_finished,
            "files_failed": v.status.files_failed,
            "records": v.status.records,
            "records_skipped": v.status.skipped,
        },
    }))
    .into_response())
}

async fn delete(State(registry): State<Arc<Registry>>, Path(name): Path<String>) -> ApiResult {
    registry.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
